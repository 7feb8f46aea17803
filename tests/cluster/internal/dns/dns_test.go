package dns

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

func TestEnsureServiceCreatesAndLabels(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	if err := EnsureService(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := EnsureService(ctx, c); err != nil {
		t.Fatalf("second EnsureService: %v", err)
	}
	s, err := c.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Spec.ClusterIP != ranges.DNSServiceIP || s.Labels[ServiceProxyNameLabel] != "wss-cluster-dns" {
		t.Fatalf("kube-dns: clusterIP %s labels %v", s.Spec.ClusterIP, s.Labels)
	}
	if len(s.Spec.Ports) != 2 || s.Spec.Ports[0].Name != "dns" || s.Spec.Ports[1].Name != "dns-tcp" {
		t.Fatalf("kube-dns ports: %+v", s.Spec.Ports)
	}
}

func TestEnsureServiceRejectsWrongClusterIP(t *testing.T) {
	ctx := context.Background()
	bad := kubeDNS()
	bad.Spec.ClusterIP = "10.96.0.11"
	c := fake.NewClientset(bad)
	if err := EnsureService(ctx, c); err == nil {
		t.Fatal("an existing kube-dns with another ClusterIP was accepted")
	}
}

// CoreDNS parses our Corefile, starts, refuses names outside the cluster domain (no
// forwarding) and stops when the context ends, releasing its port.
func TestCoreDNSStartsRefusesOtherNamesAndStops(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	// An apiserver address nobody listens on, on loopback: the plugin cannot sync, which is
	// fine for names outside its zones.
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, Corefile("127.0.0.1", port, kc)) }()

	addr := net.JoinHostPort("127.0.0.1", itoa(port))
	var r *mdns.Msg
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := new(mdns.Msg)
		m.SetQuestion("example.com.", mdns.TypeA)
		r, _, err = (&mdns.Client{Timeout: time.Second}).Exchange(m, addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended early: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("no answer from CoreDNS: %v", err)
	}
	if r.Rcode != mdns.RcodeRefused {
		t.Fatalf("example.com: rcode %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CoreDNS did not stop after the context ended")
	}
	l2, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("port still held after stop: %v", err)
	}
	l2.Close()
}

func itoa(i int) string { return strconv.Itoa(i) }
