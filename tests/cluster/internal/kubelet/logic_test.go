package kubelet

import (
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

func TestTerminationOrder(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	pod := &v1.Pod{Spec: v1.PodSpec{
		InitContainers: []v1.Container{{Name: "s1", RestartPolicy: &always}, {Name: "once"}, {Name: "s2", RestartPolicy: &always}, {Name: "s3", RestartPolicy: &always}},
		Containers:     []v1.Container{{Name: "a"}, {Name: "b"}},
	}}
	order := terminationOrder(pod, map[string]bool{"s1": true, "s2": true, "s3": true, "a": true, "b": true})
	check := func(name string, want ...string) {
		got := slices.Clone(order[name])
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s waits for %q, want %q", name, got, want)
		}
	}
	check("a")
	check("b")
	check("s3", "a", "b")
	check("s2", "a", "b", "s3")
	check("s1", "a", "b", "s2", "s3")
	if _, ok := order["once"]; ok {
		t.Error("a finished init container has no place in the order")
	}
	// Only running containers count.
	order = terminationOrder(pod, map[string]bool{"s1": true, "a": true})
	if !slices.Equal(order["s1"], []string{"a"}) {
		t.Errorf("s1 waits for %q, want [a]", order["s1"])
	}
}

func TestProbeThresholds(t *testing.T) {
	s := newProbeState(&v1.Probe{SuccessThreshold: 2, FailureThreshold: 3}, false)
	steps := []struct {
		in, want bool
	}{{true, false}, {true, true}, {false, true}, {false, true}, {true, true}, {false, true}, {false, true}, {false, false}, {true, false}, {true, true}}
	for i, st := range steps {
		if got := s.observe(st.in); got != st.want {
			t.Fatalf("step %d: observe(%v) = %v, want %v", i, st.in, got, st.want)
		}
	}
	d := newProbeState(&v1.Probe{}, true) // API defaults: success 1, failure 3
	if !d.observe(false) || !d.observe(false) || d.observe(false) {
		t.Fatal("default failureThreshold must be 3")
	}
	if !d.observe(true) {
		t.Fatal("default successThreshold must be 1")
	}
	i, p, to := periods(&v1.Probe{})
	if i != 0 || p != 10*time.Second || to != time.Second {
		t.Fatalf("default periods %v %v %v", i, p, to)
	}
}

func TestRestartBackoff(t *testing.T) {
	b := newRestartBackoff()
	now := time.Unix(1000, 0)
	var got []time.Duration
	for i := 0; i < 7; i++ {
		got = append(got, b.next("c", now))
		now = now.Add(time.Second)
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if d := b.next("other", now); d != 10*time.Second {
		t.Fatalf("keys must be independent, got %v", d)
	}
}

func TestUnsupportedPodsAreExplained(t *testing.T) {
	if msg := unsupported(&v1.Pod{Spec: v1.PodSpec{HostNetwork: true}}); !strings.Contains(msg, "ClusterFirstWithHostNet") {
		t.Errorf("hostNetwork with ClusterFirst (the node's DNS) must be refused, got %q", msg)
	}
	if msg := unsupported(&v1.Pod{Spec: v1.PodSpec{HostNetwork: true, DNSPolicy: v1.DNSClusterFirstWithHostNet}}); msg != "" {
		t.Errorf("hostNetwork with ClusterFirstWithHostNet refused: %s", msg)
	}
	ipc := &v1.PodSecurityContext{Sysctls: []v1.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}}}
	if msg := unsupported(&v1.Pod{Spec: v1.PodSpec{SecurityContext: ipc}}); !strings.Contains(msg, "kernel.shm_rmid_forced") {
		t.Errorf("an IPC sysctl must be refused by name, got %q", msg)
	}
	if msg := unsupported(&v1.Pod{Spec: v1.PodSpec{Volumes: []v1.Volume{{Name: "h", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/"}}}}}}); msg == "" {
		t.Error("hostPath must be refused")
	}
	if msg := unsupported(&v1.Pod{Spec: v1.PodSpec{Volumes: []v1.Volume{{Name: "e", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}}}); msg != "" {
		t.Errorf("emptyDir refused: %s", msg)
	}
}

func TestContainerMounts(t *testing.T) {
	c := &v1.Container{VolumeMounts: []v1.VolumeMount{{Name: "certs", MountPath: "/certs", ReadOnly: true}, {Name: "cfg", MountPath: "/etc/resolv.conf", SubPath: "resolv"}}}
	m, err := containerMounts(c, func(n string) string { return "/v/" + n }, "/pod")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m[0].Source != "/v/certs" || !m[0].ReadOnly || m[1].Source != "/v/cfg/resolv" || m[2].Target != "/etc/hosts" {
		t.Fatalf("mounts %+v", m)
	}
	c.VolumeMounts[1].SubPath = "../../etc"
	if _, err := containerMounts(c, func(n string) string { return "/v/" + n }, "/pod"); err == nil {
		t.Fatal("subPath with .. must be refused")
	}
}
