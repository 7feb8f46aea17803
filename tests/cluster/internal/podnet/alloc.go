package podnet

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Address allocation. The addresses in use are read from the kernel, not from a file: every
// wsscl-* netns's eth0 holds its pod's address, so a restarted process (or a second one, such
// as a test binary beside the cluster) sees exactly what is taken. The only file is a
// round-robin hint, /run/wss-cluster/podnet-last-ipv4, so that a freed address is not handed out
// again at once (as the CNI host-local IPAM does with its last_reserved_ip file): a Service
// proxy that keeps an endpoint for an endpoint-removal lag must not reach a new pod there.
// Losing the hint only makes allocation start again at .2.

const (
	firstHost = 2
	lastHost  = 254
	hintFile  = stateDir + "/podnet-last-ipv4"
)

// podAddrs returns the pod's IPv4 10.244.0.n and IPv6 fd10:244::n, where the IPv6 group is
// written with n's decimal digits (10.244.0.12 <-> fd10:244::12) so that the pair is
// recognisable at a glance.
func podAddrs(n int) (netip.Addr, netip.Addr) {
	v4 := netip.AddrFrom4([4]byte{10, 244, 0, byte(n)})
	v6 := netip.MustParseAddr("fd10:244::" + strconv.Itoa(n))
	return v4, v6
}

// usedHosts returns the host numbers held by every pod netns's eth0.
func usedHosts() (map[int]bool, error) {
	used := map[int]bool{}
	names, err := podNetnsNames()
	if err != nil {
		return nil, err
	}
	for _, ns := range names {
		v4, _, err := eth0Addrs(ns)
		if err != nil || !v4.IsValid() {
			continue // half-made or stale: Setup of that pod recreates it
		}
		b := v4.As4()
		if b[0] == 10 && b[1] == 244 && b[2] == 0 {
			used[int(b[3])] = true
		}
	}
	return used, nil
}

// allocate picks the next free host number after the hint, wrapping around.
func allocate() (int, error) {
	used, err := usedHosts()
	if err != nil {
		return 0, err
	}
	last := firstHost - 1
	if b, err := os.ReadFile(hintFile); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= firstHost && n <= lastHost {
			last = n
		}
	}
	size := lastHost - firstHost + 1
	for i := 1; i <= size; i++ {
		n := firstHost + (last-firstHost+i)%size
		if !used[n] {
			if err := os.WriteFile(hintFile, []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
				return 0, fmt.Errorf("podnet: write %s: %w", hintFile, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("podnet: all %d pod addresses of 10.244.0.0/24 are in use", size)
}

// podNetnsNames lists the netns names that start with the cluster's prefix.
func podNetnsNames() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("podnet: list %s: %w", netnsDir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), netnsPrefix()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
