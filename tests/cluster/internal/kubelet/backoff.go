package kubelet

import (
	"time"

	"k8s.io/client-go/util/flowcontrol"
)

// Restart back-off: pkg/kubelet/kubelet.go uses flowcontrol.NewBackOff(backOffPeriod=10s,
// MaxContainerBackOff=300s); pkg/kubelet/kuberuntime/kuberuntime_manager.go doBackOff keys it
// by pod and container.
const (
	backOffPeriod = 10 * time.Second
	maxBackOff    = 300 * time.Second
)

// restartBackoff wraps the kubelet's flowcontrol back-off.
type restartBackoff struct{ b *flowcontrol.Backoff }

func newRestartBackoff() *restartBackoff {
	return &restartBackoff{b: flowcontrol.NewBackOff(backOffPeriod, maxBackOff)}
}

// next records a failure of key at now and returns how long to wait before the restart.
func (r *restartBackoff) next(key string, now time.Time) time.Duration {
	r.b.Next(key, now)
	return r.b.Get(key)
}
