//go:build wsscl_root

package serviceproxy

// Run as root with `go test -tags wsscl_root ./internal/serviceproxy/` while no cluster runs:
// the real network (bridge, service device, blackholes) and a pod-like netns on the bridge.

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/network"
)

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestFromAPodNetnsThroughTheRealNetwork(t *testing.T) {
	if _, err := net.InterfaceByName("wsscl0"); err == nil {
		t.Skip("wsscl0 exists: a cluster is running")
	}
	n, err := network.Setup()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", "wsscl-test0").Run()
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	sh(t, "ip", "netns", "add", "wsscl-test0")
	sh(t, "ip", "link", "add", "wsvtest0", "type", "veth", "peer", "name", "eth0", "netns", "wsscl-test0")
	sh(t, "ip", "link", "set", "wsvtest0", "master", "wsscl0", "up")
	sh(t, "ip", "-n", "wsscl-test0", "addr", "add", "10.244.0.250/24", "dev", "eth0")
	sh(t, "ip", "-n", "wsscl-test0", "link", "set", "eth0", "up")
	sh(t, "ip", "-n", "wsscl-test0", "link", "set", "lo", "up")
	sh(t, "ip", "-n", "wsscl-test0", "route", "add", "default", "via", "10.244.0.1")

	// The endpoint: a server on the Node address that reports the client's address.
	ln, err := net.Listen("tcp", "10.244.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "from %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := fake.NewClientset()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{Client: c, Network: n}) }()
	e := &env{t: t, client: c, ctx: ctx}
	e.service("web", "10.96.5.5", nil, v1.ServiceTypeLoadBalancer)
	e.slice("web", ep{ip: "10.244.0.1", port: port, ready: true, serving: true})
	var lbIP string
	await(t, "LoadBalancer IP", func() bool {
		s, err := c.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) == 1 {
			lbIP = s.Status.LoadBalancer.Ingress[0].IP
		}
		return lbIP != ""
	})
	if lbIP != "10.250.0.1" {
		t.Fatalf("LoadBalancer IP %s", lbIP)
	}
	for _, target := range []string{"10.96.5.5", lbIP} {
		var out []byte
		await(t, "served from the netns: "+target, func() bool {
			out, err = exec.Command("ip", "netns", "exec", "wsscl-test0", "bash", "-c",
				"exec 3<>/dev/tcp/"+target+"/80 && cat <&3").CombinedOutput()
			return err == nil
		})
		if got := strings.TrimSpace(string(out)); got != "from 10.244.0.1" {
			t.Errorf("%s: endpoint saw %q, want the Node address", target, got)
		}
		// The test process on the host reaches it too.
		if a, err := ask(target + ":80"); err != nil || !strings.HasPrefix(a, "from ") {
			t.Errorf("from the host: %q %v", a, err)
		}
	}
	e.deleteSlice("web")
	await(t, "refused from the netns once the endpoint is gone", func() bool {
		out, err := exec.Command("ip", "netns", "exec", "wsscl-test0", "bash", "-c",
			"exec 3<>/dev/tcp/10.96.5.5/80").CombinedOutput()
		return err != nil && strings.Contains(string(out), "refused")
	})
	// An unheld Service address is blackholed, not sent anywhere.
	out, err := exec.Command("ip", "route", "get", "10.96.9.9").CombinedOutput()
	if err == nil && !strings.Contains(string(out), "blackhole") {
		t.Errorf("an unheld Service address is routed: ip route get 10.96.9.9: %s", out)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}
