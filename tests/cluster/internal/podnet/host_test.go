package podnet

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestSysctlsApplyToThePodNetworkOnly(t *testing.T) {
	const name, path = "net.ipv4.ip_unprivileged_port_start", "/proc/sys/net/ipv4/ip_unprivileged_port_start"
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, p := setup(t)
	if err := SetSysctls(p, []Sysctl{{Name: name, Value: "443"}}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", p.Name, "cat", path).CombinedOutput()
	if err != nil {
		t.Fatalf("read back: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "443" {
		t.Fatalf("%s in the pod's netns = %s, want 443", name, got)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatalf("the node's %s changed from %q to %q", name, before, after)
	}
	if err := SetSysctls(HostPod(), []Sysctl{{Name: name, Value: "443"}}); err == nil {
		t.Fatal("a sysctl was written into the node's network namespace")
	}
	if err := SetSysctls(p, []Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}}); err == nil {
		t.Fatal("a non-net sysctl was accepted for the pod network")
	}
}
