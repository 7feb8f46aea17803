package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/runtime"
)

// ctrState is one container's life across its restarts (guarded by podWorker.mu).
type ctrState struct {
	c        v1.Container
	init     bool
	sidecar  bool
	proc     Proc
	exited   chan struct{} // closed when the current process has exited
	state    v1.ContainerState
	lastTerm *v1.ContainerStateTerminated
	restarts int
	ready    bool
	started  bool
	done     bool // exited and will not be restarted
	imageOK  bool
}

func (w *podWorker) addCtr(c v1.Container, init bool) *ctrState {
	cs := &ctrState{c: c, init: init, sidecar: init && isSidecar(&c),
		state: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}}}
	w.mu.Lock()
	w.ctrs[c.Name] = cs
	w.mu.Unlock()
	return cs
}

// runContainers starts init containers in order (pkg/kubelet/kuberuntime/
// kuberuntime_container.go computeInitContainerActions: a sidecar must be started — its
// startupProbe passed — before the next one), then the regular containers, and returns when
// the pod is deleted, gone, ctx ends, or a run-once pod has finished.
func (w *podWorker) runContainers(ctx context.Context) {
	pod := w.current()
	for _, c := range pod.Spec.InitContainers {
		w.addCtr(c, true)
	}
	for _, c := range pod.Spec.Containers {
		w.addCtr(c, false)
	}
	w.markDirty()
	for _, c := range pod.Spec.InitContainers {
		w.mu.Lock()
		cs := w.ctrs[c.Name]
		w.mu.Unlock()
		go w.keep(ctx, cs)
		ok := w.waitFor(ctx, func() (bool, bool) {
			if cs.sidecar {
				return cs.started, false
			}
			if cs.done {
				return cs.lastTerm != nil && cs.lastTerm.ExitCode == 0, cs.lastTerm == nil || cs.lastTerm.ExitCode != 0
			}
			return false, false
		})
		if !ok {
			if ctx.Err() == nil && !w.deleting() && !cs.sidecar {
				w.fail("InitContainerFailed", fmt.Sprintf("init container %q failed and restartPolicy is Never", c.Name))
				w.stopSidecars()
			}
			return
		}
	}
	w.mu.Lock()
	w.initialized = true
	w.mu.Unlock()
	w.markDirty()
	for _, c := range pod.Spec.Containers {
		w.mu.Lock()
		cs := w.ctrs[c.Name]
		w.mu.Unlock()
		go w.keep(ctx, cs)
	}
	// pkg/kubelet/kubelet_pods.go getPhase: a run-once pod ends when every regular container
	// has exited for good; its sidecars are then stopped.
	if w.waitFor(ctx, func() (bool, bool) {
		for _, c := range pod.Spec.Containers {
			if !w.ctrs[c.Name].done {
				return false, false
			}
		}
		return true, false
	}) {
		w.stopSidecars()
	}
}

// waitFor waits until cond (called under w.mu) says ok or failed; false when it failed or
// the pod is deleted, gone, or ctx ended.
func (w *podWorker) waitFor(ctx context.Context, cond func() (ok, failed bool)) bool {
	for {
		w.mu.Lock()
		ok, failed := cond()
		deleting := w.pod.DeletionTimestamp != nil
		w.mu.Unlock()
		if ok {
			return true
		}
		if failed || deleting {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-w.stop:
			return false
		case <-w.changed:
		}
	}
}

// shouldRestart: sidecars always (while the pod runs), init containers on failure unless the
// pod's restartPolicy is Never, regular containers per the pod's restartPolicy
// (pkg/kubelet/container/helpers.go ShouldContainerBeRestarted).
func (w *podWorker) shouldRestart(cs *ctrState, code int) bool {
	if w.terminating || w.failReason != "" {
		return false
	}
	policy := w.pod.Spec.RestartPolicy
	switch {
	case cs.sidecar:
		return true
	case cs.init:
		return code != 0 && policy != v1.RestartPolicyNever
	case policy == v1.RestartPolicyNever:
		return false
	case policy == v1.RestartPolicyOnFailure:
		return code != 0
	}
	return true
}

func (w *podWorker) setState(cs *ctrState, f func()) {
	w.mu.Lock()
	f()
	w.mu.Unlock()
	w.notify()
}

// keep runs one container, restarting it with back-off as its policy says.
func (w *podWorker) keep(ctx context.Context, cs *ctrState) {
	key := cs.c.Name
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-w.stop:
			return false
		case <-time.After(d):
			return !w.isTerminating()
		}
	}
	for {
		if w.isTerminating() || ctx.Err() != nil {
			return
		}
		spec, err := w.containerSpec(cs)
		if err == nil {
			err = w.k.rt.ResolveImage(cs.c.Image)
			if err != nil {
				// pkg/kubelet/images/image_manager.go: ErrImagePull, then ImagePullBackOff.
				reason := "ErrImagePull"
				w.mu.Lock()
				if cs.state.Waiting != nil && (cs.state.Waiting.Reason == "ErrImagePull" || cs.state.Waiting.Reason == "ImagePullBackOff") {
					reason = "ImagePullBackOff"
				}
				w.mu.Unlock()
				w.setState(cs, func() {
					cs.state = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: reason, Message: err.Error()}}
				})
				if !wait(w.backoff.next("image/"+key, time.Now())) {
					return
				}
				continue
			}
		}
		var proc Proc
		if err == nil {
			cs.imageOK = true
			_ = os.MkdirAll(filepath.Dir(spec.LogPath), 0o755)
			proc, err = w.k.rt.Start(spec)
		}
		if err != nil {
			w.setState(cs, func() {
				cs.state = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CreateContainerError", Message: err.Error()}}
			})
			if !wait(w.backoff.next(key, time.Now())) {
				return
			}
			continue
		}
		exited := make(chan struct{})
		var code int
		go func() {
			c, werr := proc.Wait()
			if werr != nil && c == 0 {
				c = 128 + int(syscall.SIGKILL)
			}
			code = c
			close(exited)
		}()
		now := metav1.Now()
		w.setState(cs, func() {
			cs.proc, cs.exited = proc, exited
			cs.state = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: now}}
			cs.ready, cs.started = false, false
		})
		runCtx, stopProbes := context.WithCancel(ctx)
		go w.lifecycleAndProbes(runCtx, cs, spec, proc, exited)
		<-exited
		stopProbes()
		fin := metav1.Now()
		term := &v1.ContainerStateTerminated{ExitCode: int32(code), StartedAt: now, FinishedAt: fin,
			Reason: exitReason(code), ContainerID: containerID(w.uid, cs.c.Name, cs.restarts)}
		w.mu.Lock()
		restart := w.shouldRestart(cs, code)
		w.mu.Unlock()
		w.setState(cs, func() {
			cs.state = v1.ContainerState{Terminated: term}
			cs.lastTerm, cs.ready, cs.started = term, false, false
			cs.done = !restart
		})
		if !restart {
			return
		}
		d := w.backoff.next(key, time.Now())
		w.setState(cs, func() {
			cs.state = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", d, cs.c.Name, w.pod.Name)}}
		})
		if !wait(d) {
			return
		}
		w.setState(cs, func() { cs.restarts++ })
	}
}

func (w *podWorker) isTerminating() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.terminating
}

func exitReason(code int) string {
	if code == 0 {
		return "Completed"
	}
	return "Error"
}

func containerID(uid, name string, restart int) string {
	return "wss://" + uid + "/" + name + "/" + strconv.Itoa(restart)
}

// containerSpec turns the v1.Container into a runtime.Spec.
func (w *podWorker) containerSpec(cs *ctrState) (runtime.Spec, error) {
	w.mu.Lock()
	pod, pn, vols, restart := w.pod, w.net, w.vols, cs.restarts
	w.mu.Unlock()
	c := &cs.c
	in := &envInput{Pod: pod, Container: c, PodIPs: podIPs(pn), HostIPs: hostIPs,
		NodeAllocatable: w.k.capacity(), Secret: w.k.secret(pod.Namespace), ConfigMap: w.k.configMap(pod.Namespace)}
	if w.k.services != nil {
		all, _ := w.k.services.List(labelsEverything())
		in.Services = all
	}
	env, err := resolveEnv(in)
	if err != nil {
		return runtime.Spec{}, err
	}
	spec := runtime.Spec{
		Dir: w.k.cfg.Dir, PodUID: w.uid, PodName: pod.Name, Container: c.Name, Image: c.Image,
		Command: expandAll(c.Command, env), Args: expandAll(c.Args, env), Env: env, WorkingDir: c.WorkingDir,
		Netns: pn.Netns, HostNetwork: pn.Host,
		LogPath: filepath.Join(w.logDir(), c.Name, strconv.Itoa(restart)+".log"),
	}
	spec.UID, spec.GID = runAs(pod, c)
	if sc := c.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil {
		spec.ReadOnlyRoot = *sc.ReadOnlyRootFilesystem
	}
	mounts, err := containerMounts(c, vols.Path, w.podDir())
	if err != nil {
		return runtime.Spec{}, err
	}
	spec.Mounts = mounts
	return spec, nil
}

// runAs is the container's user and group, container level over pod level
// (pkg/securitycontext/util.go DetermineEffectiveSecurityContext).
func runAs(pod *v1.Pod, c *v1.Container) (uid, gid *int64) {
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid = psc.RunAsUser, psc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
	}
	return uid, gid
}

// containerMounts maps volumeMounts to host directories, plus /etc/hosts and
// /etc/resolv.conf unless the container mounts something there (pkg/kubelet/kubelet_pods.go
// makeMounts).
func containerMounts(c *v1.Container, volPath func(string) string, podDir string) ([]runtime.Mount, error) {
	var out []runtime.Mount
	has := map[string]bool{}
	for _, m := range c.VolumeMounts {
		src := volPath(m.Name)
		if m.SubPath != "" {
			if filepath.IsAbs(m.SubPath) || containsDotDot(m.SubPath) {
				return nil, fmt.Errorf("volumeMount %q: invalid subPath %q", m.Name, m.SubPath)
			}
			src = filepath.Join(src, m.SubPath)
		}
		out = append(out, runtime.Mount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly})
		has[filepath.Clean(m.MountPath)] = true
	}
	if !has["/etc/hosts"] {
		out = append(out, runtime.Mount{Source: filepath.Join(podDir, "etc-hosts"), Target: "/etc/hosts", ReadOnly: true})
	}
	if !has["/etc/resolv.conf"] {
		out = append(out, runtime.Mount{Source: filepath.Join(podDir, "resolv.conf"), Target: "/etc/resolv.conf", ReadOnly: true})
	}
	return out, nil
}

func containsDotDot(p string) bool {
	for _, el := range splitPath(p) {
		if el == ".." {
			return true
		}
	}
	return false
}

func splitPath(p string) []string {
	var out []string
	for p != "" && p != "." && p != "/" {
		dir, file := filepath.Split(p)
		out = append(out, file)
		p = filepath.Clean(dir)
		if dir == "" {
			break
		}
	}
	return out
}
