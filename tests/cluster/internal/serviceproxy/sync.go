package serviceproxy

import (
	"context"
	"log"
	"net/netip"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/proxy"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// sync applies the recorded changes: LoadBalancer addresses, local addresses, listeners. It
// returns when it wants to run again (zero: only on the next change).
func (p *proxier) sync(ctx context.Context) time.Time {
	// As syncProxyRules in pkg/proxy/iptables/proxier.go: fold the trackers into the maps.
	p.svcMap.Update(p.sct)
	p.epMap.Update(p.ect)

	p.mu.Lock()
	services := make(map[string]*v1.Service, len(p.services))
	for k, s := range p.services {
		services[k.String()] = s
	}
	p.mu.Unlock()
	var wake time.Time
	if retry := p.lb.reconcile(ctx, p.opts.client, services); retry {
		wake = time.Now().Add(time.Second)
	}

	// Every ClusterIP and allocated LoadBalancer IP is local (so that a port without a
	// listener refuses the connection, rather than the packet being blackholed).
	want := map[netip.AddrPort]wantFrontend{}
	ips := map[netip.Addr]bool{}
	for ip := range p.lb.addrs() {
		ips[ip] = true
	}
	for spn, sp := range p.svcMap {
		info := sp.(*servicePortInfo)
		cip, ok := netip.AddrFromSlice(info.ClusterIP())
		if !ok {
			continue
		}
		ips[cip.Unmap()] = true
		if info.Protocol() != v1.ProtocolTCP {
			continue // only TCP is proxied
		}
		// pkg/proxy/topology.go: ready endpoints, else serving-terminating ones; Local
		// traffic policies use the Node's own endpoints (all of them, on one Node).
		cluster, local, _, _ := proxy.CategorizeEndpoints(p.epMap[spn], sp, ranges.NodeName, nil)
		internal, external := cluster, cluster
		if info.InternalPolicyLocal() {
			internal = local
		}
		if info.ExternalPolicyLocal() {
			external = local
		}
		port := uint16(info.Port())
		want[netip.AddrPortFrom(cip.Unmap(), port)] = wantFrontend{service: spn.String(), endpoints: hostPorts(internal), lag: info.lag}
		for _, vip := range info.LoadBalancerVIPs() {
			if a, ok := netip.AddrFromSlice(vip); ok && p.lb.owns(a.Unmap()) {
				want[netip.AddrPortFrom(a.Unmap(), port)] = wantFrontend{service: spn.String(), endpoints: hostPorts(external), lag: info.lag}
			}
		}
	}
	for k := range want {
		ips[k.Addr()] = true
	}
	for ip := range ips {
		if !p.held[ip] {
			if err := p.opts.holder.AddServiceIP(ip); err != nil {
				log.Printf("serviceproxy: %v", err)
				wake = earliest(wake, time.Now().Add(time.Second))
				continue
			}
			p.held[ip] = true
		}
	}
	next, inUse := p.dp.apply(want, time.Now())
	wake = earliest(wake, next)
	for ip := range p.held {
		if !ips[ip] && !inUse[ip] {
			if err := p.opts.holder.RemoveServiceIP(ip); err != nil {
				log.Printf("serviceproxy: %v", err)
				continue
			}
			delete(p.held, ip)
		}
	}
	return wake
}

func hostPorts(eps []proxy.Endpoint) []string {
	out := make([]string, 0, len(eps))
	for _, ep := range eps {
		out = append(out, ep.String()) // "ip:port" (BaseEndpointInfo.String)
	}
	return out
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
