// Package podnet gives each pod its network namespace, veth and dual-stack addresses (and
// keeps the pod's UTS namespace beside it).
//
// Per pod (uid's first 12 hex digits = ID): netns /run/netns/wsscl-ID, host veth wsvID on
// the bridge wsscl0, pod side eth0 with 10.244.0.N/24 and fd10:244::N/64 (nodad), lo up,
// default routes via 10.244.0.1 and fd10:244::1. All state lives in the kernel and /run; see
// alloc.go for how N survives a restart.
package podnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// Pod is one pod's network.
type Pod struct {
	// Name is the netns name (wsscl-ID).
	Name string
	// Netns is the netns file, /run/netns/wsscl-ID; empty for a hostNetwork pod.
	Netns      string
	IPv4, IPv6 netip.Addr
	// Host: a hostNetwork pod, in the node's network namespace with the node's addresses.
	Host bool
}

var mu sync.Mutex

func netnsPrefix() string { return ranges.NetnsPrefix }

// lock serialises podnet changes within this process and with any other process (a test
// binary beside the cluster) through an flock on stateDir/podnet.lock.
func lock() (unlock func(), err error) {
	mu.Lock()
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		mu.Unlock()
		return nil, fmt.Errorf("podnet: %w", err)
	}
	f, err := os.OpenFile(stateDir+"/podnet.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		mu.Unlock()
		return nil, fmt.Errorf("podnet: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		mu.Unlock()
		return nil, fmt.Errorf("podnet: flock: %w", err)
	}
	return func() { f.Close(); mu.Unlock() }, nil
}

// Setup creates the network of the pod with this uid, or returns it when it already exists
// complete (idempotent: the kubelet calls it again after a restart of its own).
func Setup(uid string) (*Pod, error) {
	id, err := shortID(uid)
	if err != nil {
		return nil, err
	}
	unlock, err := lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if p := existing(id); p != nil {
		return p, nil
	}
	if !linkExists(ranges.Bridge) {
		return nil, fmt.Errorf("%w: %s", errNoBridge, ranges.Bridge)
	}
	if err := teardown(id); err != nil { // a half-made one from a crash
		return nil, err
	}
	n, err := allocate()
	if err != nil {
		return nil, err
	}
	p, err := create(id, n)
	if err != nil {
		if terr := teardown(id); terr != nil {
			err = errors.Join(err, terr)
		}
		return nil, fmt.Errorf("podnet: set up pod %s: %w", uid, err)
	}
	return p, nil
}

// existing returns the pod's network when netns, eth0 addresses and host veth are all there.
func existing(id string) *Pod {
	ns := netnsName(id)
	if _, err := os.Stat(netnsDir + "/" + ns); err != nil {
		return nil
	}
	if !linkExists(vethName(id)) {
		return nil
	}
	v4, v6, err := eth0Addrs(ns)
	if err != nil || !v4.IsValid() || !v6.IsValid() {
		return nil
	}
	return &Pod{Name: ns, Netns: netnsDir + "/" + ns, IPv4: v4, IPv6: v6}
}

func create(id string, n int) (*Pod, error) {
	ns, veth, peer := netnsName(id), vethName(id), peerName(id)
	v4, v6 := podAddrs(n)
	gw4, gw6 := ranges.NodeIPv4, ranges.NodeIPv6
	steps := [][]string{
		{"netns", "add", ns},
		{"link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns},
		{"link", "set", veth, "master", ranges.Bridge},
		{"link", "set", veth, "up"},
		{"-n", ns, "link", "set", peer, "name", "eth0"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "addr", "add", v4.String() + "/24", "dev", "eth0"},
		{"-n", ns, "-6", "addr", "add", v6.String() + "/64", "dev", "eth0", "nodad"},
		{"-n", ns, "route", "add", "default", "via", gw4, "dev", "eth0"},
		{"-n", ns, "-6", "route", "add", "default", "via", gw6, "dev", "eth0"},
	}
	for _, s := range steps {
		if _, err := ip(s...); err != nil {
			return nil, err
		}
	}
	return &Pod{Name: ns, Netns: netnsDir + "/" + ns, IPv4: v4, IPv6: v6}, nil
}

// Teardown removes the pod's netns, veth and UTS namespace. Idempotent. Processes still in
// the netns keep it alive, so the host veth is deleted explicitly (which deletes its peer).
func Teardown(uid string) error {
	id, err := shortID(uid)
	if err != nil {
		return err
	}
	unlock, err := lock()
	if err != nil {
		return err
	}
	defer unlock()
	return errors.Join(teardown(id), removeUTS(uid))
}

func teardown(id string) error {
	var errs []error
	ns := netnsName(id)
	if _, err := os.Stat(netnsDir + "/" + ns); err == nil {
		if _, err := ip("netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteLink(vethName(id)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CleanupAll removes every pod network and UTS namespace the cluster made: all netns
// wsscl-*, host links wsv*, files under stateDir/uts and the allocation hint.
func CleanupAll() error {
	unlock, err := lock()
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	names, err := podNetnsNames()
	errs = append(errs, err)
	for _, ns := range names {
		if _, err := ip("netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	links, err := hostLinks(ranges.VethPrefix)
	errs = append(errs, err)
	for _, l := range links {
		errs = append(errs, deleteLink(l))
	}
	errs = append(errs, removeAllUTS())
	if err := os.Remove(hintFile); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// hostLinks lists host links whose name starts with prefix followed by hex digits only (so
// that an unrelated "wsvpn0" is never touched).
func hostLinks(prefix string) ([]string, error) {
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, fmt.Errorf("podnet: list links: %w", err)
	}
	var out []string
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || len(rest) != idLen {
			continue
		}
		if _, err := strconv.ParseUint(rest, 16, 64); err == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
