// Package serviceproxy routes Service traffic to ready endpoints, as kube-proxy does.
//
// The rules are kube-proxy's own: Services and EndpointSlices are fed through its change
// trackers (k8s.io/kubernetes/pkg/proxy) by its informer configs (pkg/proxy/config), and each
// Service port's usable endpoints come from proxy.CategorizeEndpoints (pkg/proxy/topology.go):
// ready endpoints, else serving-terminating ones. The data plane is a userspace TCP proxy
// (dataplane.go): a listener on ClusterIP:port and LoadBalancerIP:port exists only while the
// port has usable endpoints, so with none the connection is refused, as kube-proxy's REJECT
// rule does. Only TCP Service ports are served (UDP/SCTP are not modelled; kube-dns is served
// by CoreDNS itself). Pods see the Node's address (10.244.0.1) as the source of proxied traffic.
package serviceproxy

import (
	"context"
	"errors"
	"log"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/kubernetes/pkg/proxy"
	"k8s.io/kubernetes/pkg/proxy/config"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/network"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// Config is what Run needs.
type Config struct {
	Client  kubernetes.Interface
	Network *network.Network
	// EndpointRemovalLag delays an endpoint's removal (or its becoming unusable) from the data
	// plane, as a cloud load balancer notices late. The Service annotation LagAnnotation
	// overrides it per Service.
	EndpointRemovalLag time.Duration
}

// LagAnnotation on a Service overrides Config.EndpointRemovalLag (a Go duration, e.g. "5s").
const LagAnnotation = "wss-cluster.test/endpoint-removal-lag"

const (
	serviceProxyNameLabel = "service.kubernetes.io/service-proxy-name"
	apiTimeout            = 10 * time.Second
)

// addrHolder makes addresses local (network.Network; tests use loopback addresses).
type addrHolder interface {
	AddServiceIP(ip netip.Addr) error
	RemoveServiceIP(ip netip.Addr) error
}

type options struct {
	client kubernetes.Interface
	holder addrHolder
	lag    time.Duration
	lbCIDR netip.Prefix
}

// Run serves until ctx ends, then closes every listener and connection and releases the
// addresses it added.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Client == nil || cfg.Network == nil {
		return errors.New("serviceproxy: Config needs Client and Network")
	}
	if cfg.EndpointRemovalLag < 0 {
		return errors.New("serviceproxy: negative EndpointRemovalLag")
	}
	return run(ctx, options{client: cfg.Client, holder: cfg.Network, lag: cfg.EndpointRemovalLag,
		lbCIDR: netip.MustParsePrefix(ranges.LoadBalancerCIDR)})
}

// proxier is driven as kube-proxy's proxiers are (pkg/proxy/iptables/proxier.go): event
// handlers record changes in the trackers, a sync applies them to the maps and the data plane.
type proxier struct {
	opts   options
	sct    *proxy.ServiceChangeTracker
	ect    *proxy.EndpointsChangeTracker
	svcMap proxy.ServicePortMap
	epMap  proxy.EndpointsMap
	kick   chan struct{}

	mu       sync.Mutex
	services map[types.NamespacedName]*v1.Service

	svcSynced, epSynced atomic.Bool
	dp                  *dataplane
	lb                  *lbAllocator
	held                map[netip.Addr]bool
}

// servicePortInfo is kube-proxy's ServicePort plus our removal lag.
type servicePortInfo struct {
	*proxy.BaseServicePortInfo
	lag time.Duration
}

func run(ctx context.Context, o options) error {
	p := &proxier{
		opts: o, svcMap: proxy.ServicePortMap{}, epMap: proxy.EndpointsMap{},
		kick: make(chan struct{}, 1), services: map[types.NamespacedName]*v1.Service{},
		lb: newLBAllocator(o.lbCIDR), held: map[netip.Addr]bool{},
	}
	p.sct = proxy.NewServiceChangeTracker(v1.IPv4Protocol, p.makeServiceInfo, nil)
	p.ect = proxy.NewEndpointsChangeTracker(v1.IPv4Protocol, ranges.NodeName, nil, nil)
	p.dp = newDataplane(ctx)

	// The selectors of cmd/kube-proxy/app/server.go: no Service with a service-proxy-name
	// label (kube-dns), no headless Service, no EndpointSlice of a headless Service.
	noProxyName, _ := labels.NewRequirement(serviceProxyNameLabel, selection.DoesNotExist, nil)
	noHeadless, _ := labels.NewRequirement(v1.IsHeadlessService, selection.DoesNotExist, nil)
	svcFactory := informers.NewSharedInformerFactoryWithOptions(o.client, 0,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.LabelSelector = labels.NewSelector().Add(*noProxyName).String()
			lo.FieldSelector = fields.OneTermNotEqualSelector("spec.clusterIP", v1.ClusterIPNone).String()
		}))
	epFactory := informers.NewSharedInformerFactoryWithOptions(o.client, 0,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.LabelSelector = labels.NewSelector().Add(*noHeadless).String()
		}))
	svcConfig := config.NewServiceConfig(ctx, svcFactory.Core().V1().Services(), 0)
	svcConfig.RegisterEventHandler(p)
	epConfig := config.NewEndpointSliceConfig(ctx, epFactory.Discovery().V1().EndpointSlices(), 0)
	epConfig.RegisterEventHandler(p)
	var wg sync.WaitGroup
	wg.Go(func() { svcConfig.Run(ctx.Done()) })
	wg.Go(func() { epConfig.Run(ctx.Done()) })
	svcFactory.Start(ctx.Done())
	epFactory.Start(ctx.Done())

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			p.dp.closeAll()
			for ip := range p.held {
				if err := o.holder.RemoveServiceIP(ip); err != nil {
					log.Printf("serviceproxy: %v", err)
				}
			}
			svcFactory.Shutdown()
			epFactory.Shutdown()
			wg.Wait()
			return nil
		case <-p.kick:
		case <-timer.C:
		}
		if !p.svcSynced.Load() || !p.epSynced.Load() {
			continue
		}
		if wake := p.sync(ctx); !wake.IsZero() {
			timer.Reset(time.Until(wake))
		}
	}
}

func (p *proxier) makeServiceInfo(_ *v1.ServicePort, svc *v1.Service, base *proxy.BaseServicePortInfo) proxy.ServicePort {
	info := &servicePortInfo{BaseServicePortInfo: base, lag: p.opts.lag}
	if s, ok := svc.Annotations[LagAnnotation]; ok {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			log.Printf("serviceproxy: Service %s/%s: annotation %s=%q is not a duration >= 0; using %s",
				svc.Namespace, svc.Name, LagAnnotation, s, p.opts.lag)
		} else {
			info.lag = d
		}
	}
	return info
}

func (p *proxier) trigger() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *proxier) setService(svc *v1.Service, deleted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	if deleted {
		delete(p.services, key)
	} else {
		p.services[key] = svc
	}
}

// OnServiceAdd and the other handlers implement config.ServiceHandler/EndpointSliceHandler.
func (p *proxier) OnServiceAdd(svc *v1.Service) { p.OnServiceUpdate(nil, svc) }

// OnServiceUpdate records a Service change.
func (p *proxier) OnServiceUpdate(old, svc *v1.Service) {
	p.setService(svc, false)
	p.sct.Update(old, svc)
	p.trigger()
}

// OnServiceDelete records a Service deletion.
func (p *proxier) OnServiceDelete(svc *v1.Service) {
	p.setService(svc, true)
	p.sct.Update(svc, nil)
	p.trigger()
}

// OnServiceSynced marks the initial Service list as seen.
func (p *proxier) OnServiceSynced() { p.svcSynced.Store(true); p.trigger() }

// OnEndpointSliceAdd records a new EndpointSlice.
func (p *proxier) OnEndpointSliceAdd(s *discovery.EndpointSlice) {
	if p.ect.EndpointSliceUpdate(s, false) {
		p.trigger()
	}
}

// OnEndpointSliceUpdate records an EndpointSlice change.
func (p *proxier) OnEndpointSliceUpdate(_, s *discovery.EndpointSlice) { p.OnEndpointSliceAdd(s) }

// OnEndpointSliceDelete records an EndpointSlice deletion.
func (p *proxier) OnEndpointSliceDelete(s *discovery.EndpointSlice) {
	if p.ect.EndpointSliceUpdate(s, true) {
		p.trigger()
	}
}

// OnEndpointSlicesSynced marks the initial EndpointSlice list as seen.
func (p *proxier) OnEndpointSlicesSynced() { p.epSynced.Store(true); p.trigger() }
