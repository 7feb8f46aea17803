package serviceproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
)

// Loopback stands in for the service device: every 127/8 address is local, so the tests run
// without root and without the cluster's network.
type nopHolder struct{}

func (nopHolder) AddServiceIP(netip.Addr) error    { return nil }
func (nopHolder) RemoveServiceIP(netip.Addr) error { return nil }

// echoServer answers each line with "<name>: <line>".
func echoServer(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					fmt.Fprintf(c, "%s: %s\n", name, s.Text())
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

type env struct {
	t      *testing.T
	client *fake.Clientset
	ctx    context.Context
}

func start(t *testing.T, lag time.Duration) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := fake.NewClientset()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, options{client: c, holder: nopHolder{}, lag: lag, lbCIDR: netip.MustParsePrefix("127.0.250.0/24")})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after the context ended")
		}
	})
	return &env{t: t, client: c, ctx: ctx}
}

func (e *env) service(name, ip string, annotations map[string]string, typ v1.ServiceType) *v1.Service {
	e.t.Helper()
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: annotations},
		Spec: v1.ServiceSpec{Type: typ, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http")}}},
	}
	s, err := e.client.CoreV1().Services("default").Create(e.ctx, s, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

type ep struct {
	ip                          string // default 127.0.0.1
	port                        int
	ready, serving, terminating bool
}

func (e *env) slice(svc string, eps ...ep) {
	e.t.Helper()
	s := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-x", Namespace: "default", Labels: map[string]string{discovery.LabelServiceName: svc}},
		AddressType: discovery.AddressTypeIPv4,
	}
	// One slice per port: the endpoints of a slice share its ports.
	for i, x := range eps {
		if i > 0 {
			e.t.Fatal("one endpoint per slice in these tests")
		}
		name, port := "http", int32(x.port)
		proto := v1.ProtocolTCP
		s.Ports = []discovery.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}}
		r, sv, tm := x.ready, x.serving, x.terminating
		ip := x.ip
		if ip == "" {
			ip = "127.0.0.1"
		}
		s.Endpoints = append(s.Endpoints, discovery.Endpoint{Addresses: []string{ip},
			Conditions: discovery.EndpointConditions{Ready: &r, Serving: &sv, Terminating: &tm}})
	}
	_, err := e.client.DiscoveryV1().EndpointSlices("default").Update(e.ctx, s, metav1.UpdateOptions{})
	if err != nil {
		_, err = e.client.DiscoveryV1().EndpointSlices("default").Create(e.ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deleteSlice(svc string) {
	e.t.Helper()
	if err := e.client.DiscoveryV1().EndpointSlices("default").Delete(e.ctx, svc+"-x", metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// ask sends one line on a new connection and returns the answer, or the dial error.
func ask(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintln(c, "hi")
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}

func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// await polls cond until it holds or 10 s pass.
func await(t *testing.T, what string, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Now()
}

func servedBy(addr, name string) func() bool {
	return func() bool { a, err := ask(addr); return err == nil && a == name+": hi\n" }
}

func isRefused(addr string) func() bool {
	return func() bool { _, err := ask(addr); return refused(err) }
}

func TestNoEndpointsRefusedReadyServedNotReadyRefused(t *testing.T) {
	e := start(t, 0)
	addr := "127.0.96.1:80"
	e.service("web", "127.0.96.1", nil, v1.ServiceTypeClusterIP)
	port := echoServer(t, "a")
	// Not ready, not serving: not usable.
	e.slice("web", ep{port: port})
	if _, err := ask(addr); !refused(err) {
		t.Fatalf("no usable endpoint: got %v, want connection refused", err)
	}
	e.slice("web", ep{port: port, ready: true, serving: true})
	await(t, "the ready endpoint serves", servedBy(addr, "a"))
	e.slice("web", ep{port: port, ready: false, serving: false})
	await(t, "a not-ready endpoint refuses", isRefused(addr))
}

func TestOnlyServingTerminatingEndpointsAreUsed(t *testing.T) {
	e := start(t, 0)
	addr := "127.0.96.2:80"
	e.service("web", "127.0.96.2", nil, v1.ServiceTypeClusterIP)
	e.slice("web", ep{port: echoServer(t, "t"), ready: false, serving: true, terminating: true})
	await(t, "the serving-terminating endpoint serves", servedBy(addr, "t"))
}

func TestEstablishedConnectionSurvivesRemoval(t *testing.T) {
	e := start(t, 0)
	addr := "127.0.96.3:80"
	e.service("web", "127.0.96.3", nil, v1.ServiceTypeClusterIP)
	e.slice("web", ep{port: echoServer(t, "a"), ready: true, serving: true})
	await(t, "served", servedBy(addr, "a"))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	fmt.Fprintln(c, "one")
	if l, err := r.ReadString('\n'); err != nil || l != "a: one\n" {
		t.Fatalf("before removal: %q %v", l, err)
	}
	e.deleteSlice("web")
	await(t, "new connections refused", isRefused(addr))
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintln(c, "two")
	if l, err := r.ReadString('\n'); err != nil || l != "a: two\n" {
		t.Fatalf("established connection after removal: %q %v", l, err)
	}
	// Half-close: our FIN reaches the endpoint, whose close reaches us.
	c.(*net.TCPConn).CloseWrite()
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("read after the endpoint closed returned data")
	}
}

// removalTime measures how long after the slice's deletion new connections are refused.
func removalTime(t *testing.T, e *env, name, ip string, ann map[string]string) time.Duration {
	t.Helper()
	addr := ip + ":80"
	e.service(name, ip, ann, v1.ServiceTypeClusterIP)
	e.slice(name, ep{port: echoServer(t, name), ready: true, serving: true})
	await(t, "served", servedBy(addr, name))
	t0 := time.Now()
	e.deleteSlice(name)
	return await(t, "refused after removal", isRefused(addr)).Sub(t0)
}

func TestRemovalLagFromConfigAndAnnotation(t *testing.T) {
	e := start(t, 1500*time.Millisecond)
	if d := removalTime(t, e, "global", "127.0.96.4", nil); d < 1500*time.Millisecond || d > 4*time.Second {
		t.Errorf("global lag 1.5s: refused after %s", d)
	}
	if d := removalTime(t, e, "none", "127.0.96.5", map[string]string{LagAnnotation: "0s"}); d > time.Second {
		t.Errorf("annotation 0s: refused after %s", d)
	}
	if d := removalTime(t, e, "long", "127.0.96.6", map[string]string{LagAnnotation: "3s"}); d < 3*time.Second || d > 6*time.Second {
		t.Errorf("annotation 3s: refused after %s", d)
	}
}

func TestLoadBalancerAddressAssignedServedReleased(t *testing.T) {
	e := start(t, 0)
	e.service("lb", "127.0.96.7", nil, v1.ServiceTypeLoadBalancer)
	e.slice("lb", ep{port: echoServer(t, "lb"), ready: true, serving: true})
	var ip string
	await(t, "status.loadBalancer.ingress", func() bool {
		s, err := e.client.CoreV1().Services("default").Get(e.ctx, "lb", metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) != 1 {
			return false
		}
		in := s.Status.LoadBalancer.Ingress[0]
		if in.IPMode == nil || *in.IPMode != v1.LoadBalancerIPModeVIP {
			t.Fatalf("ipMode %v, want VIP", in.IPMode)
		}
		ip = in.IP
		return true
	})
	if ip != "127.0.250.1" {
		t.Fatalf("first LoadBalancer IP %s, want 127.0.250.1", ip)
	}
	lbAddr := net.JoinHostPort(ip, strconv.Itoa(80))
	await(t, "the LoadBalancer address serves", servedBy(lbAddr, "lb"))
	await(t, "the ClusterIP serves", servedBy("127.0.96.7:80", "lb"))

	s, _ := e.client.CoreV1().Services("default").Get(e.ctx, "lb", metav1.GetOptions{})
	s.Spec.Type = v1.ServiceTypeClusterIP
	if _, err := e.client.CoreV1().Services("default").Update(e.ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, "status cleared", func() bool {
		s, err := e.client.CoreV1().Services("default").Get(e.ctx, "lb", metav1.GetOptions{})
		return err == nil && len(s.Status.LoadBalancer.Ingress) == 0
	})
	await(t, "the LoadBalancer address refuses", isRefused(lbAddr))
	await(t, "the ClusterIP still serves", servedBy("127.0.96.7:80", "lb"))
}

func TestServiceProxyNameLabelSkipped(t *testing.T) {
	e := start(t, 0)
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "dns", Namespace: "default", Labels: map[string]string{serviceProxyNameLabel: "x"}},
		Spec: v1.ServiceSpec{ClusterIP: "127.0.96.8", ClusterIPs: []string{"127.0.96.8"},
			Ports: []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}}},
	}
	if _, err := e.client.CoreV1().Services("default").Create(e.ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.slice("dns", ep{port: echoServer(t, "d"), ready: true, serving: true})
	// A labelled Service beside a normal one: once the normal one serves, the labelled one
	// has been seen too and must not.
	e.service("web", "127.0.96.9", nil, v1.ServiceTypeClusterIP)
	e.slice("web", ep{port: echoServer(t, "w"), ready: true, serving: true})
	await(t, "web served", servedBy("127.0.96.9:80", "w"))
	if _, err := ask("127.0.96.8:80"); !refused(err) {
		t.Fatalf("Service with %s was proxied: %v", serviceProxyNameLabel, err)
	}
}
