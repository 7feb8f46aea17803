package podnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// HostPod is the network of a hostNetwork pod: the node's own network namespace (where the
// bridge holds the Node addresses), and the node's addresses as the pod's, as the kubelet
// reports them (pkg/kubelet/kubelet_pods.go generateAPIPodStatus: "HostNetwork Pods inherit
// the node IPs as PodIPs"). Nothing is created, so nothing is torn down.
func HostPod() *Pod {
	return &Pod{Host: true, IPv4: netip.MustParseAddr(ranges.NodeIPv4), IPv6: netip.MustParseAddr(ranges.NodeIPv6)}
}

// Sysctl is one pod-level sysctl (pod.spec.securityContext.sysctls), its name with dots.
type Sysctl struct{ Name, Value string }

// SetSysctls writes net.* sysctls into the pod's network namespace, where the kernel keeps
// them per namespace, as the runtime does for the pod sandbox (containerd hands the
// sandbox's sysctls to runc, which writes /proc/sys/... inside the new namespaces). The
// kubelet has admitted the names before (pkg/kubelet/sysctl/allowlist.go).
func SetSysctls(p *Pod, sysctls []Sysctl) error {
	if len(sysctls) == 0 {
		return nil
	}
	if p.Host || p.Netns == "" {
		return errors.New("podnet: net sysctls need the pod's own network namespace")
	}
	for _, s := range sysctls {
		if !strings.HasPrefix(s.Name, "net.") || strings.ContainsAny(s.Name, "/\x00") || strings.Contains(s.Name, "..") {
			return fmt.Errorf("podnet: sysctl %q: only net.* sysctls apply to a pod network", s.Name)
		}
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread stays in the pod's netns and ends with this goroutine.
		runtime.LockOSThread()
		errc <- setSysctlsInNetns(p.Netns, sysctls)
	}()
	return <-errc
}

// setSysctlsInNetns joins the netns on this (locked) thread and writes the values:
// /proc/sys/net resolves against the writing thread's network namespace.
func setSysctlsInNetns(netns string, sysctls []Sysctl) error {
	fd, err := unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("podnet: open %s: %w", netns, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("podnet: setns %s: %w", netns, err)
	}
	for _, s := range sysctls {
		path := "/proc/sys/" + strings.ReplaceAll(s.Name, ".", "/")
		if err := os.WriteFile(path, []byte(s.Value), 0o644); err != nil {
			return fmt.Errorf("podnet: sysctl %s=%s: %w", s.Name, s.Value, err)
		}
	}
	return nil
}
