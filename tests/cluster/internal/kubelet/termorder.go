package kubelet

import v1 "k8s.io/api/core/v1"

// terminationOrder says, for each running container, which containers must have exited
// before it gets SIGTERM (after its own preStop): pkg/kubelet/kuberuntime/
// kuberuntime_termination_order.go newTerminationOrdering. Regular containers wait for
// nothing; a restartable init container (native sidecar) waits for every regular container
// and for the sidecars declared after it.
func terminationOrder(pod *v1.Pod, running map[string]bool) map[string][]string {
	order := map[string][]string{}
	var regular []string
	for _, c := range pod.Spec.Containers {
		if running[c.Name] {
			regular = append(regular, c.Name)
			order[c.Name] = nil
		}
	}
	var later []string // running sidecars declared after the current one
	for i := len(pod.Spec.InitContainers) - 1; i >= 0; i-- {
		c := pod.Spec.InitContainers[i]
		if !isSidecar(&c) || !running[c.Name] {
			continue
		}
		deps := append(append([]string{}, regular...), later...)
		order[c.Name] = deps
		later = append(later, c.Name)
	}
	return order
}

// isSidecar is a restartable init container (pkg/api/v1/pod IsRestartableInitContainer).
func isSidecar(c *v1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == v1.ContainerRestartPolicyAlways
}
