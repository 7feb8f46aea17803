package kubelet

import (
	"context"
	"encoding/json"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// statusLoop patches the pod status whenever it is marked dirty (pkg/kubelet/status/status_manager.go).
func (w *podWorker) statusLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.dirty:
		}
		w.flushStatus(ctx)
	}
}

func (w *podWorker) flushStatus(ctx context.Context) {
	w.mu.Lock()
	pod := w.pod
	st := w.buildStatus()
	same := w.lastSent != nil && apiequality.Semantic.DeepEqual(*w.lastSent, st)
	w.mu.Unlock()
	if same {
		return
	}
	// Merge patch with the UID as precondition, as the status manager's PatchPodStatus does.
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID}, "status": st})
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
	defer cancel()
	if _, err := w.k.client.CoreV1().Pods(pod.Namespace).Patch(cctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		w.k.logf("pod %s/%s status: %v", pod.Namespace, pod.Name, err)
		return
	}
	w.mu.Lock()
	w.lastSent = &st
	w.mu.Unlock()
}

// buildStatus computes the pod status (under w.mu): pkg/kubelet/kubelet_pods.go
// generateAPIPodStatus, getPhase and pkg/kubelet/status/generate.go.
func (w *podWorker) buildStatus() v1.PodStatus {
	pod := w.pod
	st := v1.PodStatus{StartTime: w.startTime, QOSClass: pod.Status.QOSClass}
	st.HostIP = hostIPs[0]
	for _, ip := range hostIPs {
		st.HostIPs = append(st.HostIPs, v1.HostIP{IP: ip})
	}
	for _, ip := range podIPs(w.net) {
		st.PodIPs = append(st.PodIPs, v1.PodIP{IP: ip})
	}
	if len(st.PodIPs) > 0 {
		st.PodIP = st.PodIPs[0].IP
	}
	ctrReady, initDone := true, w.initialized
	for _, c := range pod.Spec.InitContainers {
		cs := w.ctrs[c.Name]
		s := w.ctrStatus(c, cs)
		st.InitContainerStatuses = append(st.InitContainerStatuses, s)
		if cs != nil && cs.sidecar && !s.Ready {
			ctrReady = false
		}
	}
	running, done, succeeded, waiting := 0, 0, 0, 0
	for _, c := range pod.Spec.Containers {
		cs := w.ctrs[c.Name]
		s := w.ctrStatus(c, cs)
		st.ContainerStatuses = append(st.ContainerStatuses, s)
		if !s.Ready {
			ctrReady = false
		}
		switch {
		case cs == nil:
			waiting++
		case cs.done:
			done++
			if cs.lastTerm != nil && cs.lastTerm.ExitCode == 0 {
				succeeded++
			}
		case cs.state.Running != nil:
			running++
		case cs.lastTerm != nil:
			running++ // restarting: getPhase counts it as running
		default:
			waiting++
		}
	}
	switch {
	case w.failReason != "":
		st.Phase, st.Reason, st.Message = v1.PodFailed, w.failReason, w.failMessage
	case !initDone:
		st.Phase = v1.PodPending
	case len(pod.Spec.Containers) > 0 && done == len(pod.Spec.Containers):
		st.Phase = v1.PodFailed
		if succeeded == done {
			st.Phase = v1.PodSucceeded
		}
	case running > 0 && waiting == 0:
		st.Phase = v1.PodRunning
	default:
		st.Phase = v1.PodPending
	}
	finished := st.Phase == v1.PodSucceeded || st.Phase == v1.PodFailed
	cond := func(t v1.PodConditionType, ok bool, reason, msg string) v1.PodCondition {
		s := v1.ConditionFalse
		if ok {
			s, reason, msg = v1.ConditionTrue, "", ""
		}
		c := v1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg, LastTransitionTime: metav1.Now()}
		for _, old := range pod.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	readyToStart := w.netReady && !finished
	msg := ""
	if !w.netReady {
		msg = w.failMessage
	}
	ready := ctrReady && !finished && readinessGatesOK(pod)
	notReadyReason := "ContainersNotReady"
	if finished {
		notReadyReason = "PodCompleted"
	}
	st.Conditions = []v1.PodCondition{
		cond(v1.PodReadyToStartContainers, readyToStart, "", msg),
		cond(v1.PodInitialized, initDone, "ContainersNotInitialized", "containers with incomplete status"),
		cond(v1.ContainersReady, ctrReady && !finished, notReadyReason, "containers with unready status"),
		cond(v1.PodReady, ready, notReadyReason, "containers with unready status"),
		cond(v1.PodScheduled, true, "", ""),
	}
	// A merge patch replaces the list: keep the conditions others own (readiness gates).
	for _, c := range pod.Status.Conditions {
		switch c.Type {
		case v1.PodReadyToStartContainers, v1.PodInitialized, v1.ContainersReady, v1.PodReady, v1.PodScheduled:
		default:
			st.Conditions = append(st.Conditions, c)
		}
	}
	return st
}

// readinessGatesOK: every spec.readinessGates condition must be True (pkg/kubelet/status/generate.go).
func readinessGatesOK(pod *v1.Pod) bool {
	for _, g := range pod.Spec.ReadinessGates {
		ok := false
		for _, c := range pod.Status.Conditions {
			if c.Type == g.ConditionType && c.Status == v1.ConditionTrue {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (w *podWorker) ctrStatus(c v1.Container, cs *ctrState) v1.ContainerStatus {
	s := v1.ContainerStatus{Name: c.Name, Image: c.Image,
		State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "PodInitializing"}}}
	if cs == nil {
		return s
	}
	started := cs.started
	s.State, s.Ready, s.RestartCount, s.Started = cs.state, cs.ready, int32(cs.restarts), &started
	if cs.imageOK {
		s.ImageID = "wss-cluster://" + c.Image
	}
	if cs.proc != nil {
		s.ContainerID = containerID(w.uid, c.Name, cs.restarts)
	}
	if cs.lastTerm != nil && cs.state.Terminated == nil {
		s.LastTerminationState = v1.ContainerState{Terminated: cs.lastTerm}
	}
	return s
}

func (k *Kubelet) secret(ns string) func(string) (*v1.Secret, error) {
	return func(name string) (*v1.Secret, error) {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		return k.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	}
}

func (k *Kubelet) configMap(ns string) func(string) (*v1.ConfigMap, error) {
	return func(name string) (*v1.ConfigMap, error) {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		return k.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	}
}
