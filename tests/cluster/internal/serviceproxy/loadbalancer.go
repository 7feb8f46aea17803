package serviceproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/netip"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// lbAllocator plays the cloud's service controller: one address of its range per
// LoadBalancer Service (without a loadBalancerClass), written to status.loadBalancer.ingress
// with ipMode VIP, released when the Service goes or stops being a LoadBalancer.
type lbAllocator struct {
	cidr      netip.Prefix
	byService map[string]netip.Addr
}

func newLBAllocator(cidr netip.Prefix) *lbAllocator {
	return &lbAllocator{cidr: cidr, byService: map[string]netip.Addr{}}
}

func (a *lbAllocator) owns(ip netip.Addr) bool {
	for _, x := range a.byService {
		if x == ip {
			return true
		}
	}
	return false
}

func (a *lbAllocator) addrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, ip := range a.byService {
		out[ip] = true
	}
	return out
}

func wantsLB(s *v1.Service) bool {
	return s.Spec.Type == v1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass == nil
}

// reconcile allocates, patches and releases; it reports whether a status patch failed.
func (a *lbAllocator) reconcile(ctx context.Context, client kubernetes.Interface, services map[string]*v1.Service) (retry bool) {
	for key := range a.byService {
		if s, ok := services[key]; !ok || !wantsLB(s) {
			delete(a.byService, key)
		}
	}
	for key, s := range services {
		ing := s.Status.LoadBalancer.Ingress
		if !wantsLB(s) {
			// Clear an address we had written (the Service's type changed).
			if len(ing) > 0 && a.inRange(ing[0].IP) {
				if err := patchIngress(ctx, client, s, nil); err != nil {
					log.Printf("serviceproxy: %v", err)
					retry = true
				}
			}
			continue
		}
		ip, ok := a.byService[key]
		if !ok {
			// Adopt the address of an earlier run, else take the first free one.
			if len(ing) > 0 && a.inRange(ing[0].IP) && !a.owns(netip.MustParseAddr(ing[0].IP)) {
				ip = netip.MustParseAddr(ing[0].IP)
			} else if ip, ok = a.free(); !ok {
				log.Printf("serviceproxy: Service %s: no free address in %s", key, a.cidr)
				continue
			}
			a.byService[key] = ip
		}
		vip := v1.LoadBalancerIPModeVIP
		want := []v1.LoadBalancerIngress{{IP: ip.String(), IPMode: &vip}}
		if len(ing) == 1 && ing[0].IP == want[0].IP && ing[0].IPMode != nil && *ing[0].IPMode == vip && len(ing[0].Ports) == 0 && ing[0].Hostname == "" {
			continue
		}
		if err := patchIngress(ctx, client, s, want); err != nil {
			log.Printf("serviceproxy: %v", err)
			retry = true
		}
	}
	return retry
}

func (a *lbAllocator) inRange(s string) bool {
	ip, err := netip.ParseAddr(s)
	return err == nil && a.cidr.Contains(ip)
}

// free returns the lowest unallocated host address of the range (not the network's first or
// last address).
func (a *lbAllocator) free() (netip.Addr, bool) {
	last := a.cidr.Masked().Addr()
	for ip := last.Next(); a.cidr.Contains(ip); ip = ip.Next() {
		if !a.cidr.Contains(ip.Next()) {
			break // broadcast
		}
		if !a.owns(ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// patchIngress sets status.loadBalancer.ingress (nil clears it) with a merge patch of the
// status subresource, as the cloud service controller updates it.
func patchIngress(ctx context.Context, client kubernetes.Interface, s *v1.Service, ing []v1.LoadBalancerIngress) error {
	body := map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": ing}}}
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	_, err = client.CoreV1().Services(s.Namespace).Patch(cctx, s.Name, types.MergePatchType, data, metav1.PatchOptions{}, "status")
	if err != nil && !strings.Contains(err.Error(), "not found") {
		return fmt.Errorf("patching status.loadBalancer of Service %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}
