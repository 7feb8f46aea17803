package kubelet

import (
	"strings"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// recordingNet is fakeNet that remembers what the kubelet asked of it.
type recordingNet struct {
	fakeNet
	mu      sync.Mutex
	setups  int
	sysctls []podnet.Sysctl
}

func (n *recordingNet) Setup(uid string) (*podnet.Pod, error) {
	n.mu.Lock()
	n.setups++
	n.mu.Unlock()
	return n.fakeNet.Setup(uid)
}

func (n *recordingNet) SetSysctls(p *podnet.Pod, s []podnet.Sysctl) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p.Host {
		panic("sysctls written into the node's network namespace")
	}
	n.sysctls = append(n.sysctls, s...)
	return nil
}

func hostNetworkPod() *v1.Pod {
	pod := sidecarPod()
	pod.Spec.HostNetwork = true
	pod.Spec.DNSPolicy = v1.DNSClusterFirstWithHostNet
	return pod
}

func TestHostNetworkPodRunsInTheNodesNetworkWithTheNodesAddresses(t *testing.T) {
	net := &recordingNet{}
	cs, rt := startWorkerNet(t, hostNetworkPod(), net)
	p := waitPod(t, cs, "sidecar running", func(p *v1.Pod) bool {
		return len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].State.Running != nil
	})
	// pkg/kubelet/kubelet_pods.go generateAPIPodStatus: the node IPs become the pod IPs.
	if p.Status.PodIP != ranges.NodeIPv4 || len(p.Status.PodIPs) != 2 || p.Status.PodIPs[1].IP != ranges.NodeIPv6 {
		t.Fatalf("pod IPs %v %v, want the node's", p.Status.PodIP, p.Status.PodIPs)
	}
	rt.mu.Lock()
	spec := rt.specs["proxy"]
	rt.mu.Unlock()
	if !spec.HostNetwork || spec.Netns != "" {
		t.Fatalf("container spec HostNetwork %v Netns %q, want the node's network", spec.HostNetwork, spec.Netns)
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	if net.setups != 0 {
		t.Fatalf("a pod network was set up %d times for a hostNetwork pod", net.setups)
	}
}

func TestPodSysctlsGoIntoThePodNetwork(t *testing.T) {
	pod := sidecarPod()
	pod.Spec.SecurityContext = &v1.PodSecurityContext{Sysctls: []v1.Sysctl{{Name: "net/ipv4/ip_unprivileged_port_start", Value: "443"}}}
	net := &recordingNet{}
	cs, _ := startWorkerNet(t, pod, net)
	waitPod(t, cs, "sidecar running", func(p *v1.Pod) bool {
		return len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].State.Running != nil
	})
	net.mu.Lock()
	defer net.mu.Unlock()
	want := []podnet.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "443"}}
	if len(net.sysctls) != 1 || net.sysctls[0] != want[0] {
		t.Fatalf("sysctls %v, want %v", net.sysctls, want)
	}
}

// The real kubelet's admission (pkg/kubelet/sysctl/allowlist.go): no net.* sysctl on the
// node's network namespace, and nothing off the safe list.
func TestForbiddenSysctlsRejectThePod(t *testing.T) {
	for name, pod := range map[string]*v1.Pod{"hostNetwork": hostNetworkPod(), "unsafe": sidecarPod()} {
		t.Run(name, func(t *testing.T) {
			s := v1.Sysctl{Name: "net.ipv4.ip_unprivileged_port_start", Value: "443"}
			if name == "unsafe" {
				s = v1.Sysctl{Name: "net.core.somaxconn", Value: "4096"}
			}
			pod.Spec.SecurityContext = &v1.PodSecurityContext{Sysctls: []v1.Sysctl{s}}
			cs, rt := startWorkerNet(t, pod, &recordingNet{})
			p := waitPod(t, cs, "Failed", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodFailed })
			if p.Status.Reason != "SysctlForbidden" || !strings.Contains(p.Status.Message, s.Name) {
				t.Fatalf("status reason %q message %q", p.Status.Reason, p.Status.Message)
			}
			if len(rt.snapshot()) != 0 {
				t.Fatalf("nothing may start: %q", rt.snapshot())
			}
		})
	}
}
