package network

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests create " + ranges.Bridge + " and need root (CAP_NET_ADMIN); run them as root")
	}
	if _, err := netlink.LinkByName(ranges.Bridge); err == nil {
		t.Skip(ranges.Bridge + " exists (a cluster is running?): its network must not be touched")
	}
}

func linkExists(t *testing.T, name string) bool {
	t.Helper()
	_, err := netlink.LinkByName(name)
	return err == nil
}

func blackholeCount(t *testing.T) int {
	t.Helper()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Type: unix.RTN_BLACKHOLE}, netlink.RT_FILTER_TYPE)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range routes {
		for _, c := range blackholes {
			if r.Dst != nil && r.Dst.String() == c {
				n++
			}
		}
	}
	return n
}

func assertGone(t *testing.T) {
	t.Helper()
	for _, name := range []string{ranges.Bridge, ranges.ServiceDevice} {
		if linkExists(t, name) {
			t.Errorf("%s still exists", name)
		}
	}
	if n := blackholeCount(t); n != 0 {
		t.Errorf("%d blackhole routes left", n)
	}
}

func TestSetupServiceIPClose(t *testing.T) {
	needRoot(t)
	n, err := Setup()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Cleanup() })
	t.Logf("service device kind: %s", n.ServiceDeviceKind)

	br, err := netlink.LinkByName(ranges.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		t.Error("bridge is not up")
	}
	addrs, _ := netlink.AddrList(br, netlink.FAMILY_ALL)
	want := map[string]bool{ranges.NodeIPv4 + "/24": false, ranges.NodeIPv6 + "/64": false}
	for _, a := range addrs {
		if _, ok := want[a.IPNet.String()]; ok {
			want[a.IPNet.String()] = true
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				t.Errorf("%s is tentative (DAD not off)", a.IPNet)
			}
		}
	}
	for a, ok := range want {
		if !ok {
			t.Errorf("bridge lacks %s", a)
		}
	}
	if got := blackholeCount(t); got != len(blackholes) {
		t.Errorf("blackhole routes: %d, want %d", got, len(blackholes))
	}

	// A Service IP becomes bindable, and stops being local after removal.
	ip := netip.MustParseAddr("10.96.77.77")
	if err := n.AddServiceIP(ip); err != nil {
		t.Fatal(err)
	}
	if err := n.AddServiceIP(ip); err != nil {
		t.Fatalf("second add: %v", err)
	}
	l, err := net.Listen("tcp", "10.96.77.77:8080")
	if err != nil {
		t.Fatalf("listen on added service IP: %v", err)
	}
	l.Close()
	if err := n.RemoveServiceIP(ip); err != nil {
		t.Fatal(err)
	}
	if err := n.RemoveServiceIP(ip); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if l, err := net.Listen("tcp", "10.96.77.77:8080"); err == nil {
		l.Close()
		t.Fatal("listen succeeded on a removed service IP")
	}
	for _, bad := range []string{"8.8.8.8", "10.244.0.7"} {
		if err := n.AddServiceIP(netip.MustParseAddr(bad)); err == nil {
			t.Errorf("AddServiceIP(%s) accepted an address outside the service ranges", bad)
		}
	}

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t)
}

func TestSetupTwiceAndCleanupIdempotent(t *testing.T) {
	needRoot(t)
	if _, err := Setup(); err != nil {
		t.Fatal(err)
	}
	n, err := Setup() // replaces the stale one
	if err != nil {
		t.Fatalf("second Setup: %v", err)
	}
	if err := n.AddServiceIP(netip.MustParseAddr("10.250.0.9")); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	assertGone(t)
}
