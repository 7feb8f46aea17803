package podnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"time"
)

// ipTimeout bounds one `ip` invocation; they take milliseconds, a hang means a wedged kernel.
const ipTimeout = 10 * time.Second

// ip runs the iproute2 `ip` command (the same tool `ip netns add` users know, so the state
// it leaves is what an operator inspects with it).
func ip(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// addrInfo is the part of `ip -j addr show` we read.
type addrInfo struct {
	IfName   string `json:"ifname"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
		Scope     string `json:"scope"`
	} `json:"addr_info"`
}

// eth0Addrs returns the global IPv4 and IPv6 addresses of eth0 in the named netns (invalid
// Addr for a family that has none).
func eth0Addrs(ns string) (v4, v6 netip.Addr, err error) {
	out, err := ip("-j", "-n", ns, "addr", "show", "dev", "eth0")
	if err != nil {
		return v4, v6, err
	}
	var links []addrInfo
	if err := json.Unmarshal(out, &links); err != nil {
		return v4, v6, fmt.Errorf("ip -j -n %s addr show dev eth0: %w", ns, err)
	}
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Scope != "global" {
				continue
			}
			addr, perr := netip.ParseAddr(a.Local)
			if perr != nil {
				continue
			}
			if addr.Is4() && !v4.IsValid() {
				v4 = addr
			} else if addr.Is6() && !v6.IsValid() {
				v6 = addr
			}
		}
	}
	return v4, v6, nil
}

// linkExists reports whether a link of this name exists in the host network namespace.
func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// deleteLink removes a host link if it exists.
func deleteLink(name string) error {
	if !linkExists(name) {
		return nil
	}
	if _, err := ip("link", "del", name); err != nil && linkExists(name) {
		return err
	}
	return nil
}

// errNoBridge says the bridge the veths attach to is missing.
var errNoBridge = errors.New("podnet: bridge missing (network.Setup creates it)")
