// Package network makes the cluster's host-side network: the pod bridge, the device that holds
// Service and LoadBalancer addresses, and the blackhole routes that keep every packet here.
package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// Network is what Setup made: the bridge, the service device and the blackhole routes.
type Network struct {
	mu sync.Mutex
	// ServiceDeviceKind is "dummy" or "bridge" (a port-less bridge when the kernel has no
	// dummy links).
	ServiceDeviceKind string
	closed            bool
}

// blackholes are the ranges routed nowhere, so that an address nobody holds is dropped on this
// machine instead of following the host's default route. The connected /24 of the bridge and
// the /32 local addresses of the service device are more specific and win.
var blackholes = []string{ranges.ServiceCIDR, ranges.LoadBalancerCIDR, "10.244.0.0/16"}

// Setup removes anything stale by name, then creates the bridge (with the Node's addresses),
// the service device and the blackhole routes. No forwarding sysctl is needed: pods reach the
// Node, ClusterIPs and LoadBalancer IPs as local addresses of the host.
func Setup() (*Network, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("network: Setup needs root (CAP_NET_ADMIN) to create " + ranges.Bridge)
	}
	if err := Cleanup(); err != nil {
		return nil, fmt.Errorf("network: removing stale devices: %w", err)
	}
	n := &Network{}
	if err := n.setup(); err != nil {
		_ = Cleanup()
		return nil, err
	}
	return n, nil
}

func (n *Network) setup() error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: ranges.Bridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("network: creating bridge %s: %w", ranges.Bridge, err)
	}
	// No duplicate address detection: the IPv6 address is usable at once (it is ours alone).
	if err := writeSysctl("net/ipv6/conf/"+ranges.Bridge+"/accept_dad", "0"); err != nil {
		return err
	}
	link, err := netlink.LinkByName(ranges.Bridge)
	if err != nil {
		return fmt.Errorf("network: bridge %s: %w", ranges.Bridge, err)
	}
	for _, cidr := range []string{ranges.NodeIPv4 + "/24", ranges.NodeIPv6 + "/64"} {
		if err := addAddr(link, netip.MustParsePrefix(cidr)); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("network: bringing %s up: %w", ranges.Bridge, err)
	}

	n.ServiceDeviceKind = "dummy"
	if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: ranges.ServiceDevice}}); err != nil {
		n.ServiceDeviceKind = "bridge"
		if err2 := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: ranges.ServiceDevice}}); err2 != nil {
			return fmt.Errorf("network: creating %s (dummy: %v; bridge: %w)", ranges.ServiceDevice, err, err2)
		}
	}
	_ = writeSysctl("net/ipv6/conf/"+ranges.ServiceDevice+"/accept_dad", "0")
	svc, err := netlink.LinkByName(ranges.ServiceDevice)
	if err != nil {
		return fmt.Errorf("network: %s: %w", ranges.ServiceDevice, err)
	}
	if err := netlink.LinkSetUp(svc); err != nil {
		return fmt.Errorf("network: bringing %s up: %w", ranges.ServiceDevice, err)
	}

	for _, cidr := range blackholes {
		_, dst, _ := net.ParseCIDR(cidr)
		if err := netlink.RouteReplace(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE}); err != nil {
			return fmt.Errorf("network: blackhole route %s: %w", cidr, err)
		}
	}
	return nil
}

// AddServiceIP makes ip (a ClusterIP or a LoadBalancer IP) a local /32 (or /128) address of the
// service device so a listener can bind it. Adding an address twice is not an error.
func (n *Network) AddServiceIP(ip netip.Addr) error {
	link, p, err := n.serviceAddr(ip)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: prefixToIPNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("network: adding %s to %s: %w", p, ranges.ServiceDevice, err)
	}
	return nil
}

// RemoveServiceIP undoes AddServiceIP. Removing an absent address is not an error.
func (n *Network) RemoveServiceIP(ip netip.Addr) error {
	link, p, err := n.serviceAddr(ip)
	if err != nil {
		return err
	}
	if err := netlink.AddrDel(link, &netlink.Addr{IPNet: prefixToIPNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("network: removing %s from %s: %w", p, ranges.ServiceDevice, err)
	}
	return nil
}

// serviceAddr checks that ip belongs to the Service or LoadBalancer range (nothing else may be
// put on the device) and returns the device and the host prefix.
func (n *Network) serviceAddr(ip netip.Addr) (netlink.Link, netip.Prefix, error) {
	if n == nil {
		return nil, netip.Prefix{}, errors.New("network: nil Network (Setup not called)")
	}
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if closed {
		return nil, netip.Prefix{}, errors.New("network: closed")
	}
	ip = ip.Unmap()
	if !ip.IsValid() {
		return nil, netip.Prefix{}, errors.New("network: invalid service IP")
	}
	if !netip.MustParsePrefix(ranges.ServiceCIDR).Contains(ip) && !netip.MustParsePrefix(ranges.LoadBalancerCIDR).Contains(ip) {
		return nil, netip.Prefix{}, fmt.Errorf("network: service IP %s is outside %s and %s", ip, ranges.ServiceCIDR, ranges.LoadBalancerCIDR)
	}
	link, err := netlink.LinkByName(ranges.ServiceDevice)
	if err != nil {
		return nil, netip.Prefix{}, fmt.Errorf("network: %s: %w", ranges.ServiceDevice, err)
	}
	return link, netip.PrefixFrom(ip, ip.BitLen()), nil
}

// Close removes what Setup made.
func (n *Network) Close() error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	return Cleanup()
}

// Cleanup removes, by name, the bridge, the service device (with every address on it) and the
// blackhole routes. It keeps no state and is idempotent. Pod veths go with their netns (podnet).
func Cleanup() error {
	var errs []error
	for _, name := range []string{ranges.ServiceDevice, ranges.Bridge} {
		link, err := netlink.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if !errors.As(err, &nf) {
				errs = append(errs, fmt.Errorf("network: looking up %s: %w", name, err))
			}
			continue
		}
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("network: deleting %s: %w", name, err))
		}
	}
	for _, cidr := range blackholes {
		_, dst, _ := net.ParseCIDR(cidr)
		err := netlink.RouteDel(&netlink.Route{Dst: dst, Type: unix.RTN_BLACKHOLE})
		if err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("network: deleting blackhole route %s: %w", cidr, err))
		}
	}
	return errors.Join(errs...)
}

func addAddr(link netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: prefixToIPNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrReplace(link, a); err != nil {
		return fmt.Errorf("network: adding %s to %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func writeSysctl(name, value string) error {
	if err := os.WriteFile("/proc/sys/"+name, []byte(value), 0o644); err != nil {
		return fmt.Errorf("network: sysctl %s=%s: %w", name, value, err)
	}
	return nil
}
