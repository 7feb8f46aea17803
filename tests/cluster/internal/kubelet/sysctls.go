package kubelet

import (
	"context"
	"sync"

	v1 "k8s.io/api/core/v1"
	utilsysctl "k8s.io/component-helpers/node/util/sysctl"
	"k8s.io/kubernetes/pkg/kubelet/lifecycle"
	"k8s.io/kubernetes/pkg/kubelet/sysctl"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
)

// sysctlAdmitter is the real kubelet's sysctl admission (pkg/kubelet/sysctl/allowlist.go)
// over its default allowlist of safe sysctls (safe_sysctls.go; no --allowed-unsafe-sysctls):
// it refuses unlisted names and net.* sysctls on hostNetwork pods, whose network namespace
// is the node's.
var sysctlAdmitter = sync.OnceValues(func() (lifecycle.PodAdmitHandler, error) {
	return sysctl.NewAllowlist(sysctl.SafeSysctlAllowlist(context.Background()))
})

// admitSysctls returns the kubelet's rejection reason and message for the pod's sysctls, or
// "" when they are admitted (pkg/kubelet/kubelet.go rejectPod: "Pod was rejected: ...").
func admitSysctls(pod *v1.Pod) (reason, msg string) {
	if pod.Spec.SecurityContext == nil || len(pod.Spec.SecurityContext.Sysctls) == 0 {
		return "", ""
	}
	admit, err := sysctlAdmitter()
	if err != nil {
		return sysctl.ForbiddenReason, "Pod was rejected: the sysctl allowlist: " + err.Error()
	}
	r := admit.Admit(context.Background(), &lifecycle.PodAdmitAttributes{Pod: pod})
	if r.Admit {
		return "", ""
	}
	return r.Reason, "Pod was rejected: " + r.Message
}

// podSysctls are the pod's net.* sysctls, which belong to its network namespace. The safe
// ones outside net.* (kernel.shm_rmid_forced, kernel.msg*, kernel.sem) belong to the IPC
// namespace, which this runtime makes per container (see unsupported).
func podSysctls(pod *v1.Pod) []podnet.Sysctl {
	if pod.Spec.SecurityContext == nil {
		return nil
	}
	var out []podnet.Sysctl
	for _, s := range pod.Spec.SecurityContext.Sysctls {
		// Names may use '/' as the separator (pkg/kubelet/sysctl/util.go).
		out = append(out, podnet.Sysctl{Name: utilsysctl.NormalizeName(s.Name), Value: s.Value})
	}
	return out
}
