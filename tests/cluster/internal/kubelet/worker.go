package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/volumes"
)

// podWorker runs one pod from its first sight to its deletion (pkg/kubelet/pod_workers.go).
type podWorker struct {
	k       *Kubelet
	uid     string
	backoff *restartBackoff

	mu          sync.Mutex
	pod         *v1.Pod
	net         *podnet.Pod
	vols        *volumes.Pod
	ctrs        map[string]*ctrState
	startTime   *metav1.Time
	netReady    bool
	initialized bool
	terminating bool
	failReason  string
	failMessage string
	lastSent    *v1.PodStatus

	changed  chan struct{} // the pod object or a container changed
	dirty    chan struct{} // the status must be patched
	stop     chan struct{} // the pod is gone from the API
	stopOnce sync.Once
}

func newPodWorker(k *Kubelet, pod *v1.Pod) *podWorker {
	return &podWorker{
		k: k, uid: string(pod.UID), pod: pod.DeepCopy(), backoff: newRestartBackoff(),
		ctrs:    map[string]*ctrState{},
		changed: make(chan struct{}, 1), dirty: make(chan struct{}, 1), stop: make(chan struct{}),
	}
}

func (w *podWorker) update(pod *v1.Pod) {
	w.mu.Lock()
	relevant := (pod.DeletionTimestamp != nil) != (w.pod.DeletionTimestamp != nil) ||
		len(pod.Spec.ReadinessGates) > 0
	w.pod = pod.DeepCopy()
	if w.vols != nil {
		w.vols.UpdatePod(pod)
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
	if relevant {
		w.markDirty()
	}
}

func (w *podWorker) forceStop() { w.stopOnce.Do(func() { close(w.stop) }) }

func (w *podWorker) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
	w.markDirty()
}

func (w *podWorker) markDirty() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

func (w *podWorker) current() *v1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

func (w *podWorker) deleting() bool { return w.current().DeletionTimestamp != nil }

func (w *podWorker) podDir() string { return volumes.PodDir(w.k.cfg.Dir, w.uid) }

func (w *podWorker) logDir() string {
	p := w.current()
	return filepath.Join(w.k.cfg.Dir, "kubelet", "logs", fmt.Sprintf("%s_%s_%s", p.Namespace, p.Name, p.UID))
}

// run is the pod's life: set up, init containers, containers, wait, terminate, clean up.
func (w *podWorker) run(ctx context.Context) {
	statusCtx, stopStatus := context.WithCancel(context.WithoutCancel(ctx))
	statusDone := make(chan struct{})
	go func() { defer close(statusDone); w.statusLoop(statusCtx) }()
	defer func() { stopStatus(); <-statusDone }()

	now := metav1.Now()
	w.mu.Lock()
	w.startTime = &now
	w.mu.Unlock()

	if msg := unsupported(w.current()); msg != "" {
		w.fail("UnsupportedByWssCluster", msg)
	} else if reason, msg := admitSysctls(w.current()); reason != "" {
		w.fail(reason, msg)
	} else if w.deleting() {
		// Deleted before it ever ran: nothing to start.
	} else if err := w.setup(ctx); err == nil {
		runCtx, cancelRun := context.WithCancel(ctx)
		go w.refreshVolumes(runCtx)
		w.runContainers(runCtx)
		cancelRun()
	}
	if ctx.Err() != nil {
		w.killAll(5 * time.Second)
		w.teardown()
		return
	}
	// Wait for the deletion (or the pod's disappearance) and terminate gracefully.
	for !w.deleting() {
		select {
		case <-ctx.Done():
			w.killAll(5 * time.Second)
			w.teardown()
			return
		case <-w.stop:
			w.killAll(time.Second)
			w.teardown()
			return
		case <-w.changed:
		}
	}
	w.terminate(ctx)
	w.teardown()
	w.flushStatus(ctx)
	w.k.deletePod(ctx, w.current())
}

// unsupported explains why this kubelet cannot run the pod, or is "".
func unsupported(pod *v1.Pod) string {
	switch {
	case pod.Spec.HostNetwork && (pod.Spec.DNSPolicy == v1.DNSClusterFirst || pod.Spec.DNSPolicy == ""):
		// The real kubelet gives such a pod the node's resolv.conf, as for Default
		// (pkg/kubelet/network/dns/dns.go getPodDNSType).
		return "hostNetwork pods with dnsPolicy ClusterFirst get the node's DNS (as Default), which the wss-cluster kubelet does not support: use ClusterFirstWithHostNet"
	case pod.Spec.HostPID || pod.Spec.HostIPC:
		return "hostPID/hostIPC pods are not supported by the wss-cluster kubelet"
	case pod.Spec.DNSPolicy == v1.DNSDefault:
		return "dnsPolicy Default is not supported by the wss-cluster kubelet (use ClusterFirst or None)"
	}
	if sc := pod.Spec.SecurityContext; sc != nil {
		for _, s := range sc.Sysctls {
			if !strings.HasPrefix(s.Name, "net.") && !strings.HasPrefix(s.Name, "net/") {
				return fmt.Sprintf("sysctl %q: only net.* sysctls are supported by the wss-cluster kubelet (its containers do not share an IPC namespace)", s.Name)
			}
		}
	}
	for _, v := range pod.Spec.Volumes {
		s := v.VolumeSource
		if s.Secret == nil && s.ConfigMap == nil && s.DownwardAPI == nil && s.Projected == nil && s.EmptyDir == nil {
			return fmt.Sprintf("volume %q: only secret, configMap, downwardAPI, projected and emptyDir volumes are supported by the wss-cluster kubelet", v.Name)
		}
	}
	return ""
}

// fail marks the pod Failed with a reason the user can read in its status.
func (w *podWorker) fail(reason, msg string) {
	w.mu.Lock()
	w.failReason, w.failMessage = reason, msg
	w.mu.Unlock()
	w.k.logf("pod %s/%s: %s: %s", w.current().Namespace, w.current().Name, reason, msg)
	w.markDirty()
}

// setup makes the network, the volumes and /etc/hosts, /etc/resolv.conf, retrying until it
// works or the pod is deleted.
func (w *podWorker) setup(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		err := w.setupOnce(ctx)
		if err == nil {
			return nil
		}
		w.mu.Lock()
		w.failMessage = err.Error() // shown as the PodReadyToStartContainers message
		w.mu.Unlock()
		w.markDirty()
		w.k.logf("pod %s: setup: %v", w.uid, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.stop:
			return err
		case <-time.After(w.backoff.next("setup", time.Now())):
		}
		if w.deleting() {
			return err
		}
	}
}

func (w *podWorker) setupOnce(ctx context.Context) error {
	pod := w.current()
	pn := podnet.HostPod()
	if !pod.Spec.HostNetwork {
		var err error
		if pn, err = w.k.net.Setup(w.uid); err != nil {
			return fmt.Errorf("pod network: %w", err)
		}
		// The sandbox's sysctls, before any container starts (admitted in run).
		if err := w.k.net.SetSysctls(pn, podSysctls(pod)); err != nil {
			return fmt.Errorf("pod network: %w", err)
		}
	}
	vols, err := volumes.New(volumes.Config{Dir: w.k.cfg.Dir, Client: w.k.client, NodeAllocatable: w.k.capacity()}, pod)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(w.podDir(), 0o755); err != nil {
		return err
	}
	if err := vols.Sync(ctx); err != nil {
		return err
	}
	hosts := hostsFile(pod, podIPs(pn))
	if pod.Spec.HostNetwork {
		if hosts, err = hostNetworkHostsFile(pod); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(w.podDir(), "etc-hosts"), hosts, 0o644); err != nil {
		return err
	}
	rc, err := resolvConf(pod)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(w.podDir(), "resolv.conf"), rc, 0o644); err != nil {
		return err
	}
	w.mu.Lock()
	w.net, w.vols, w.netReady, w.failMessage = pn, vols, true, ""
	w.mu.Unlock()
	w.markDirty()
	return nil
}

func podIPs(pn *podnet.Pod) []string {
	var ips []string
	if pn == nil {
		return nil
	}
	if pn.IPv4.IsValid() {
		ips = append(ips, pn.IPv4.String())
	}
	if pn.IPv6.IsValid() {
		ips = append(ips, pn.IPv6.String())
	}
	return ips
}

// refreshVolumes rewrites the API-backed volumes every VolumeRefreshPeriod (the kubelet's
// syncFrequency resync of pkg/kubelet/kubelet.go syncLoop).
func (w *podWorker) refreshVolumes(ctx context.Context) {
	t := time.NewTicker(w.k.cfg.VolumeRefreshPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		vols := w.vols
		w.mu.Unlock()
		if err := vols.Sync(ctx); err != nil && ctx.Err() == nil {
			w.k.logf("pod %s: volume refresh: %v", w.uid, err)
		}
	}
}

func (w *podWorker) teardown() {
	w.mu.Lock()
	vols := w.vols
	w.mu.Unlock()
	if vols != nil {
		if err := vols.Teardown(); err != nil {
			w.k.logf("%v", err)
		}
	}
	if w.current().Spec.HostNetwork {
		// The node's network: nothing was made for the pod.
	} else if err := w.k.net.Teardown(w.uid); err != nil {
		w.k.logf("pod %s: network teardown: %v", w.uid, err)
	}
	_ = os.RemoveAll(w.podDir())
}

var hostIPs = []string{ranges.NodeIPv4, ranges.NodeIPv6}
