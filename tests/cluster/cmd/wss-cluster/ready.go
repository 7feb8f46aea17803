package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/controlplane"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// checkTimeout bounds each single probe of the readiness wait.
const checkTimeout = 2 * time.Second

// readiness is one thing the cluster must do before it is ready, and the component it proves.
type readiness struct {
	component string
	what      string
	check     func(ctx context.Context) error
}

// waitClusterReady waits, in order, for the Node to be Ready (kubelet), the `kubernetes`
// Service to answer on its ClusterIP (serviceproxy) and kube-dns to answer (dns). A check whose
// component is still a stub is skipped.
func waitClusterReady(ctx context.Context, cp *controlplane.ControlPlane, comps *components, started func(string, time.Duration)) error {
	begin := time.Now()
	client, err := kubernetes.NewForConfig(cp.AdminConfig)
	if err != nil {
		return err
	}
	checks := []readiness{
		{"kubelet", "Node " + ranges.NodeName + " Ready", func(ctx context.Context) error { return nodeReady(ctx, client) }},
		{"serviceproxy", "https://" + ranges.KubernetesServiceIP + ":443/readyz", func(ctx context.Context) error { return serviceAnswers(ctx, cp.AdminConfig) }},
		{"dns", "kubernetes.default.svc." + ranges.ClusterDomain + " at " + ranges.DNSServiceIP, dnsAnswers},
	}
	deadline := time.Now().Add(readyTimeout)
	for _, c := range checks {
		var last error
		for {
			if comps.isStubbed(c.component) {
				break
			}
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			last = c.check(cctx)
			cancel()
			if last == nil {
				started(c.component, time.Since(begin))
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not ready after %s: %s: %v", c.component, readyTimeout, c.what, last)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// nodeReady is nil when the Node's Ready condition is True.
func nodeReady(ctx context.Context, client kubernetes.Interface) error {
	node, err := client.CoreV1().Nodes().Get(ctx, ranges.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("Ready=%s: %s", c.Status, c.Message)
		}
	}
	return fmt.Errorf("no Ready condition yet")
}

// serviceAnswers is nil when the apiserver answers /readyz through the `kubernetes` Service's
// ClusterIP, verifying the serving certificate's name for that address.
func serviceAnswers(ctx context.Context, admin *rest.Config) error {
	cfg := rest.CopyConfig(admin)
	cfg.Host = "https://" + net.JoinHostPort(ranges.KubernetesServiceIP, "443")
	cfg.Timeout = checkTimeout
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: checkTimeout}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// dnsAnswers is nil when kube-dns resolves the `kubernetes` Service's name to its ClusterIP.
func dnsAnswers(ctx context.Context) error {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, net.JoinHostPort(ranges.DNSServiceIP, strconv.Itoa(53)))
	}}
	addrs, err := r.LookupHost(ctx, "kubernetes.default.svc."+ranges.ClusterDomain+".")
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if a == ranges.KubernetesServiceIP {
			return nil
		}
	}
	return fmt.Errorf("answered %v, want %s", addrs, ranges.KubernetesServiceIP)
}
