package kubelet

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/runtime"
)

func labelsEverything() labels.Selector { return labels.Everything() }

// expandAll expands $(VAR) in command and args (pkg/kubelet/container/helpers.go ExpandContainerCommandAndArgs).
func expandAll(in []string, env []string) []string {
	if in == nil {
		return nil
	}
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	f := expansion.MappingFuncFor(m)
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expansion.Expand(s, f)
	}
	return out
}

func (w *podWorker) handlers(spec runtime.Spec) *handlerRunner {
	w.mu.Lock()
	ip := first(podIPs(w.net))
	w.mu.Unlock()
	return &handlerRunner{podIP: ip, exec: func(ctx context.Context, cmd []string) (int, []byte, error) {
		return w.k.rt.Exec(ctx, spec, cmd)
	}}
}

// runHook runs a lifecycle handler (pkg/kubelet/lifecycle/handlers.go Run): exec, httpGet, sleep.
func (w *podWorker) runHook(ctx context.Context, h *v1.LifecycleHandler, c *v1.Container, spec runtime.Spec) error {
	r := w.handlers(spec)
	switch {
	case h.Exec != nil:
		return r.run(ctx, h.Exec.Command, 24*time.Hour)
	case h.HTTPGet != nil:
		timeout := 30 * time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = time.Until(d)
		}
		return r.httpGet(h.HTTPGet, c, timeout, "lifecycle")
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		}
		return nil
	}
	return fmt.Errorf("lifecycle handler has no action")
}

// lifecycleAndProbes runs postStart and then the probes of one container run
// (pkg/kubelet/prober/worker.go run/doProbe).
func (w *podWorker) lifecycleAndProbes(ctx context.Context, cs *ctrState, spec runtime.Spec, proc Proc, exited <-chan struct{}) {
	c := &cs.c
	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
		// pkg/kubelet/kuberuntime/kuberuntime_container.go startContainer: a failed postStart kills the container.
		if err := w.runHook(ctx, c.Lifecycle.PostStart, c, spec); err != nil && ctx.Err() == nil {
			w.k.logf("pod %s container %s: postStart failed: %v", w.uid, c.Name, err)
			w.kill(proc, exited, w.grace())
			return
		}
	}
	r := w.handlers(spec)
	runStart := time.Now()
	sleepUntil := func(t time.Time) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Until(t)):
			return true
		}
	}
	if p := c.StartupProbe; p != nil {
		initial, period, _ := periods(p)
		st := newProbeState(p, false)
		next := runStart.Add(initial)
		for {
			if !sleepUntil(next) {
				return
			}
			next = next.Add(period)
			ok := r.probeOnce(ctx, p, c) == nil
			if st.observe(ok) {
				break
			}
			if st.run >= st.failureThreshold && !st.last {
				w.k.logf("pod %s container %s failed its startup probe, restarting", w.uid, c.Name)
				w.kill(proc, exited, w.grace())
				return
			}
		}
	}
	w.setState(cs, func() {
		cs.started = true
		if c.ReadinessProbe == nil {
			cs.ready = true
		}
	})
	done := make(chan struct{}, 2)
	if p := c.ReadinessProbe; p != nil {
		go func() {
			defer func() { done <- struct{}{} }()
			initial, period, _ := periods(p)
			st := newProbeState(p, false)
			next := time.Now().Add(initial)
			for sleepUntil(next) {
				next = next.Add(period)
				ok := st.observe(r.probeOnce(ctx, p, c) == nil)
				w.mu.Lock()
				changed := cs.ready != ok
				w.mu.Unlock()
				if changed {
					w.setState(cs, func() { cs.ready = ok })
				}
			}
		}()
	}
	if p := c.LivenessProbe; p != nil {
		initial, period, _ := periods(p)
		st := newProbeState(p, true)
		next := time.Now().Add(initial)
		for sleepUntil(next) {
			next = next.Add(period)
			if !st.observe(r.probeOnce(ctx, p, c) == nil) {
				w.k.logf("pod %s container %s failed its liveness probe, restarting", w.uid, c.Name)
				w.kill(proc, exited, w.grace())
				st.reset()
				return
			}
		}
	}
}

// grace is the pod's termination grace period (default 30 s).
func (w *podWorker) grace() time.Duration {
	pod := w.current()
	if pod.DeletionGracePeriodSeconds != nil {
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// kill sends SIGTERM and SIGKILL after grace, returning when the process has exited.
func (w *podWorker) kill(proc Proc, exited <-chan struct{}, grace time.Duration) {
	_ = proc.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = proc.Signal(syscall.SIGKILL)
		<-exited
	}
}

// stopSidecars stops the sidecars of a finished run-once pod, last declared first.
func (w *podWorker) stopSidecars() {
	w.mu.Lock()
	w.terminating = true
	var list []*ctrState
	for i := len(w.pod.Spec.InitContainers) - 1; i >= 0; i-- {
		if cs := w.ctrs[w.pod.Spec.InitContainers[i].Name]; cs != nil && cs.sidecar && cs.proc != nil {
			list = append(list, cs)
		}
	}
	w.mu.Unlock()
	for _, cs := range list {
		w.kill(cs.proc, cs.exited, w.grace())
	}
	w.notify()
}

// killAll kills every container at once (SIGKILL after at most bound).
func (w *podWorker) killAll(bound time.Duration) {
	w.mu.Lock()
	w.terminating = true
	var list []*ctrState
	for _, cs := range w.ctrs {
		if cs.proc != nil {
			list = append(list, cs)
		}
	}
	w.mu.Unlock()
	done := make(chan struct{}, len(list))
	for _, cs := range list {
		go func() {
			_ = cs.proc.Signal(syscall.SIGKILL)
			<-cs.exited
			done <- struct{}{}
		}()
	}
	timeout := time.After(bound)
	for range list {
		select {
		case <-done:
		case <-timeout:
			return
		}
	}
}

// terminate stops a deleted pod as pkg/kubelet/kuberuntime/kuberuntime_container.go
// killContainersWithSyncResult does: every running container at once runs its preStop, then
// waits for its turn (kuberuntime_termination_order.go), then gets SIGTERM; SIGKILL at the
// end of the grace period.
func (w *podWorker) terminate(ctx context.Context) {
	grace := w.grace()
	deadline := time.Now().Add(grace)
	w.mu.Lock()
	w.terminating = true
	running := map[string]bool{}
	list := map[string]*ctrState{}
	for name, cs := range w.ctrs {
		if cs.proc != nil && cs.state.Running != nil {
			running[name] = true
			list[name] = cs
		}
	}
	pod := w.pod
	w.mu.Unlock()
	order := terminationOrder(pod, running)
	finished := make(chan struct{}, len(list))
	hookCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for name, cs := range list {
		go func() {
			defer func() { finished <- struct{}{} }()
			c := &cs.c
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
				spec, err := w.containerSpec(cs)
				if err == nil {
					err = w.runHook(hookCtx, c.Lifecycle.PreStop, c, spec)
				}
				if err != nil {
					w.k.logf("pod %s container %s: preStop: %v", w.uid, name, err)
				}
			}
			for _, dep := range order[name] {
				select {
				case <-list[dep].exited:
				case <-hookCtx.Done():
				}
			}
			_ = cs.proc.Signal(syscall.SIGTERM)
			select {
			case <-cs.exited:
			case <-time.After(time.Until(deadline)):
				_ = cs.proc.Signal(syscall.SIGKILL)
				<-cs.exited
			}
		}()
	}
	for range list {
		<-finished
	}
	// Give the keepers a moment to record the terminated states.
	time.Sleep(50 * time.Millisecond)
}

// deletePod removes a terminated pod with grace 0 and a UID precondition
// (pkg/kubelet/status/status_manager.go syncPod).
func (k *Kubelet) deletePod(ctx context.Context, pod *v1.Pod) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
	defer cancel()
	zero := int64(0)
	uid := pod.UID
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(cctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil {
		k.logf("delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}
