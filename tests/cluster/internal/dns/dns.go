// Package dns runs CoreDNS's kubernetes plugin as the cluster's kube-dns.
//
// CoreDNS runs in this process, from its own Go module (core/dnsserver with the kubernetes and
// errors plugins), bound on the kube-dns ClusterIP only. It answers the cluster domain (and the
// reverse zones of Service and pod IPs); every other name is REFUSED: nothing is forwarded.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"       // registers the bind plugin
	_ "github.com/coredns/coredns/plugin/errors"     // registers the errors plugin
	_ "github.com/coredns/coredns/plugin/kubernetes" // registers the kubernetes plugin
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/network"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// Config is what Run needs.
type Config struct {
	Client     kubernetes.Interface
	Kubeconfig string
	Network    *network.Network
}

const (
	// ServiceProxyNameLabel keeps the Service proxy away from kube-dns (CoreDNS serves its
	// ClusterIP itself), as kube-proxy skips such Services (cmd/kube-proxy/app/server.go).
	ServiceProxyNameLabel = "service.kubernetes.io/service-proxy-name"
	serviceProxyName      = "wss-cluster-dns"
	apiTimeout            = 10 * time.Second
)

// caddy keeps global state: one CoreDNS per process at a time.
var runMu sync.Mutex

// Run ensures the kube-dns Service, makes its ClusterIP local, and serves DNS until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Client == nil || cfg.Kubeconfig == "" || cfg.Network == nil {
		return errors.New("dns: Config needs Client, Kubeconfig and Network")
	}
	if err := EnsureService(ctx, cfg.Client); err != nil {
		return err
	}
	ip := netip.MustParseAddr(ranges.DNSServiceIP)
	if err := cfg.Network.AddServiceIP(ip); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	defer func() { _ = cfg.Network.RemoveServiceIP(ip) }()
	return serve(ctx, Corefile(ranges.DNSServiceIP, 53, cfg.Kubeconfig))
}

// Corefile is the CoreDNS configuration: the kubernetes plugin for the cluster domain and the
// reverse zones, as the default kubeadm Corefile has it but without forward, cache or loop.
func Corefile(bind string, port int, kubeconfig string) string {
	return fmt.Sprintf(`%[4]s:%[2]d in-addr.arpa:%[2]d ip6.arpa:%[2]d {
    bind %[1]s
    errors
    kubernetes %[4]s in-addr.arpa ip6.arpa {
        kubeconfig %[3]q
        pods insecure
        ttl 5
    }
}
`, bind, port, kubeconfig, ranges.ClusterDomain)
}

// serve starts CoreDNS with corefile and stops it when ctx ends.
func serve(ctx context.Context, corefile string) error {
	runMu.Lock()
	defer runMu.Unlock()
	if err := dnsserver.Register(); err != nil && !strings.Contains(err.Error(), "already registered") {
		return fmt.Errorf("dns: registering the CoreDNS server type: %w", err)
	}
	caddy.Quiet = true
	dnsserver.Quiet = true
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), Filepath: "Corefile", ServerTypeName: "dns"})
	if err != nil {
		return fmt.Errorf("dns: starting CoreDNS: %w", err)
	}
	log.Printf("dns: CoreDNS serving %s on %s:53", ranges.ClusterDomain, ranges.DNSServiceIP)
	<-ctx.Done()
	if err := inst.Stop(); err != nil {
		return fmt.Errorf("dns: stopping CoreDNS: %w", err)
	}
	inst.ShutdownCallbacks()
	return nil
}

// kubeDNS is the Service pods' resolv.conf points at.
func kubeDNS() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: "kube-dns", Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{
				ServiceProxyNameLabel:           serviceProxyName,
				"k8s-app":                       "kube-dns",
				"kubernetes.io/name":            "CoreDNS",
				"kubernetes.io/cluster-service": "true",
			},
		},
		Spec: corev1.ServiceSpec{
			Type:      corev1.ServiceTypeClusterIP,
			ClusterIP: ranges.DNSServiceIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
			},
		},
	}
}

// EnsureService creates kube-system/kube-dns, or checks that the existing one has the ClusterIP
// and the service-proxy-name label (adding the label if it lacks it).
func EnsureService(ctx context.Context, client kubernetes.Interface) error {
	want := kubeDNS()
	svcs := client.CoreV1().Services(metav1.NamespaceSystem)
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	_, err := svcs.Create(cctx, want, metav1.CreateOptions{})
	if err == nil || !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("dns: creating Service kube-system/kube-dns: %w", err)
		}
		return nil
	}
	got, err := svcs.Get(cctx, want.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("dns: reading Service kube-system/kube-dns: %w", err)
	}
	if got.Spec.ClusterIP != ranges.DNSServiceIP {
		return fmt.Errorf("dns: Service kube-system/kube-dns has ClusterIP %q, want %s", got.Spec.ClusterIP, ranges.DNSServiceIP)
	}
	if got.Labels[ServiceProxyNameLabel] != serviceProxyName {
		if got.Labels == nil {
			got.Labels = map[string]string{}
		}
		got.Labels[ServiceProxyNameLabel] = serviceProxyName
		if _, err := svcs.Update(cctx, got, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("dns: labelling Service kube-system/kube-dns: %w", err)
		}
	}
	return nil
}
