package kubelet

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestHostsFile(t *testing.T) {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "ns"},
		Spec: v1.PodSpec{Subdomain: "web", HostAliases: []v1.HostAlias{{IP: "10.244.0.9", Hostnames: []string{"a", "b"}}}}}
	got := string(hostsFile(pod, []string{"10.244.0.2", "fd10:244::2"}))
	want := "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n" +
		"10.244.0.2\tweb-0.web.ns.svc.cluster.local\tweb-0\nfd10:244::2\tweb-0.web.ns.svc.cluster.local\tweb-0\n" +
		"\n# Entries added by HostAliases.\n10.244.0.9\ta\tb\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	pod.Spec.Subdomain, pod.Spec.HostAliases = "", nil
	if got := string(hostsFile(pod, []string{"10.244.0.2"})); !strings.HasSuffix(got, "\n10.244.0.2\tweb-0\n") {
		t.Fatalf("plain hostname line missing:\n%s", got)
	}
}

func TestResolvConf(t *testing.T) {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "team"}, Spec: v1.PodSpec{DNSPolicy: v1.DNSClusterFirst}}
	got, err := resolvConf(pod)
	if err != nil {
		t.Fatal(err)
	}
	want := "search team.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	two := "2"
	pod.Spec.DNSConfig = &v1.PodDNSConfig{Searches: []string{"extra.test"}, Options: []v1.PodDNSConfigOption{{Name: "ndots", Value: &two}, {Name: "edns0"}}}
	got, _ = resolvConf(pod)
	want = "search team.svc.cluster.local svc.cluster.local cluster.local extra.test\nnameserver 10.96.0.10\noptions ndots:2 edns0\n"
	if string(got) != want {
		t.Fatalf("with dnsConfig got\n%s\nwant\n%s", got, want)
	}
	pod.Spec.DNSPolicy = v1.DNSDefault
	if _, err := resolvConf(pod); err == nil || !strings.Contains(err.Error(), "Default") {
		t.Fatalf("dnsPolicy Default must be refused with a clear error, got %v", err)
	}
}
