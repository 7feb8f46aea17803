package kubelet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/runtime"
)

// fakeRT records what the kubelet asks of the runtime, in order.
type fakeRT struct {
	mu     sync.Mutex
	events []string
	procs  map[string]*fakeProc
	// startupOK says whether the startup probe of a container passes now.
	startupOK func(container string) bool
	// specs is the last spec each container was started with.
	specs map[string]runtime.Spec
}

type fakeProc struct {
	rt   *fakeRT
	name string
	once sync.Once
	done chan struct{}
	code int
}

func (p *fakeProc) Signal(s os.Signal) error {
	p.rt.record("signal " + p.name + " " + s.String())
	code := 0
	if s == syscall.SIGKILL {
		code = 137
	}
	p.once.Do(func() { p.code = code; close(p.done) })
	return nil
}
func (p *fakeProc) Wait() (int, error) { <-p.done; p.rt.record("exited " + p.name); return p.code, nil }
func (p *fakeProc) Pid() int           { return 1 }

func (r *fakeRT) record(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *fakeRT) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *fakeRT) ResolveImage(image string) error {
	if strings.HasPrefix(image, "unknown/") {
		return fmt.Errorf("image %q not in the table", image)
	}
	return nil
}
func (r *fakeRT) Start(spec runtime.Spec) (Proc, error) {
	r.record("start " + spec.Container)
	p := &fakeProc{rt: r, name: spec.Container, done: make(chan struct{})}
	r.mu.Lock()
	if r.specs == nil {
		r.specs = map[string]runtime.Spec{}
	}
	r.specs[spec.Container] = spec
	r.procs[spec.Container] = p
	r.mu.Unlock()
	return p, nil
}
func (r *fakeRT) Exec(ctx context.Context, spec runtime.Spec, cmd []string) (int, []byte, error) {
	switch cmd[0] {
	case "startup":
		if r.startupOK(spec.Container) {
			return 0, nil, nil
		}
		return 1, nil, nil
	case "prestop":
		r.record("preStop " + spec.Container + " begin")
		time.Sleep(100 * time.Millisecond)
		r.record("preStop " + spec.Container + " end")
	}
	return 0, nil, nil
}

type fakeNet struct{}

func (fakeNet) Setup(uid string) (*podnet.Pod, error) {
	return &podnet.Pod{Name: "wsscl-test", Netns: "/run/netns/wsscl-test",
		IPv4: netip.MustParseAddr("10.244.0.7"), IPv6: netip.MustParseAddr("fd10:244::7")}, nil
}
func (fakeNet) Teardown(uid string) error                         { return nil }
func (fakeNet) SetSysctls(p *podnet.Pod, s []podnet.Sysctl) error { return nil }

func sidecarPod() *v1.Pod {
	always := v1.ContainerRestartPolicyAlways
	grace := int64(5)
	hook := &v1.Lifecycle{PreStop: &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{"prestop"}}}}
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "0123456789abcdef"},
		Spec: v1.PodSpec{
			NodeName: "wss-node", RestartPolicy: v1.RestartPolicyAlways, TerminationGracePeriodSeconds: &grace,
			InitContainers: []v1.Container{{Name: "proxy", Image: "ghcr.io/wss-sidecar/wss-sidecar:0.1.0", RestartPolicy: &always, Lifecycle: hook,
				StartupProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"startup"}}}, PeriodSeconds: 1, FailureThreshold: 30}}},
			Containers: []v1.Container{{Name: "app", Image: "ghcr.io/wss-sidecar/wss-sidecar:0.1.0", Lifecycle: hook}},
		},
	}
}

func waitPod(t *testing.T, cs *fake.Clientset, what string, ok func(*v1.Pod) bool) *v1.Pod {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p, err := cs.CoreV1().Pods("default").Get(context.Background(), "web", metav1.GetOptions{})
		if err == nil && ok(p) {
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
	return nil
}

func condTrue(p *v1.Pod, c v1.PodConditionType) bool {
	for _, x := range p.Status.Conditions {
		if x.Type == c {
			return x.Status == v1.ConditionTrue
		}
	}
	return false
}

func TestWorkerSidecarGatesAppAndTerminatesInOrder(t *testing.T) {
	pod := sidecarPod()
	cs := fake.NewClientset(pod)
	var gate sync.Mutex
	open, probes := false, 0
	rt := &fakeRT{procs: map[string]*fakeProc{}, startupOK: func(string) bool {
		gate.Lock()
		defer gate.Unlock()
		probes++
		return open
	}}
	k := &Kubelet{cfg: Config{Dir: t.TempDir(), NodeName: "wss-node", VolumeRefreshPeriod: time.Minute},
		client: cs, rt: rt, net: fakeNet{}, workers: map[string]*podWorker{}}
	w := newPodWorker(k, pod)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()

	p := waitPod(t, cs, "sidecar running", func(p *v1.Pod) bool {
		return len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].State.Running != nil
	})
	if p.Status.PodIP != "10.244.0.7" || len(p.Status.PodIPs) != 2 || p.Status.PodIPs[1].IP != "fd10:244::7" {
		t.Fatalf("pod IPs %v %v", p.Status.PodIP, p.Status.PodIPs)
	}
	// The app must not start while the sidecar's startupProbe fails.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		gate.Lock()
		n := probes
		gate.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("startup probe not run twice")
		}
	}
	if slices.Contains(rt.snapshot(), "start app") {
		t.Fatal("app started before the sidecar's startupProbe passed")
	}
	gate.Lock()
	open = true
	gate.Unlock()
	p = waitPod(t, cs, "Ready", func(p *v1.Pod) bool { return condTrue(p, v1.PodReady) })
	if p.Status.Phase != v1.PodRunning || !condTrue(p, v1.ContainersReady) || !condTrue(p, v1.PodInitialized) {
		t.Fatalf("status %+v", p.Status)
	}
	if s := p.Status.InitContainerStatuses[0]; s.Started == nil || !*s.Started || !s.Ready {
		t.Fatalf("sidecar status %+v", s)
	}

	// Delete: both preStops at once, app SIGTERM after its preStop, sidecar after the app exited.
	del := p.DeepCopy()
	now := metav1.Now()
	del.DeletionTimestamp = &now
	w.update(del)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not finish")
	}
	ev := rt.snapshot()
	idx := func(e string) int {
		i := slices.Index(ev, e)
		if i < 0 {
			t.Fatalf("event %q missing in %q", e, ev)
		}
		return i
	}
	if idx("preStop app begin") > idx("preStop proxy end") || idx("preStop proxy begin") > idx("preStop app end") {
		t.Errorf("preStops must overlap: %q", ev)
	}
	if idx("signal app terminated") < idx("preStop app end") {
		t.Errorf("app got SIGTERM before its preStop ended: %q", ev)
	}
	if idx("signal proxy terminated") < idx("exited app") {
		t.Errorf("sidecar got SIGTERM before the app exited: %q", ev)
	}
	if _, err := cs.CoreV1().Pods("default").Get(context.Background(), "web", metav1.GetOptions{}); err == nil {
		t.Error("pod not deleted after termination")
	}
	if _, err := os.Stat(w.podDir()); !os.IsNotExist(err) {
		t.Errorf("pod dir left behind: %v", err)
	}
	if strings.Count(strings.Join(ev, "\n"), "start ") != 2 {
		t.Errorf("unexpected restarts: %q", ev)
	}
}

func TestWorkerRunOncePodSucceedsAndStopsSidecar(t *testing.T) {
	pod := sidecarPod()
	pod.Spec.RestartPolicy = v1.RestartPolicyNever
	pod.Spec.InitContainers[0].StartupProbe = nil
	cs := fake.NewClientset(pod)
	rt := &fakeRT{procs: map[string]*fakeProc{}}
	k := &Kubelet{cfg: Config{Dir: t.TempDir(), NodeName: "wss-node", VolumeRefreshPeriod: time.Minute},
		client: cs, rt: rt, net: fakeNet{}, workers: map[string]*podWorker{}}
	w := newPodWorker(k, pod)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.run(ctx)
	waitPod(t, cs, "app running", func(p *v1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
	})
	rt.mu.Lock()
	app := rt.procs["app"]
	rt.mu.Unlock()
	app.once.Do(func() { app.code = 0; close(app.done) }) // the app exits 0 by itself
	p := waitPod(t, cs, "Succeeded", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodSucceeded })
	if condTrue(p, v1.PodReady) {
		t.Error("a Succeeded pod is not Ready")
	}
	if !slices.Contains(rt.snapshot(), "signal proxy terminated") {
		t.Errorf("sidecar not stopped: %q", rt.snapshot())
	}
}

func startWorker(t *testing.T, pod *v1.Pod) (*fake.Clientset, *fakeRT) {
	return startWorkerNet(t, pod, fakeNet{})
}

func startWorkerNet(t *testing.T, pod *v1.Pod, net Net) (*fake.Clientset, *fakeRT) {
	cs := fake.NewClientset(pod)
	rt := &fakeRT{procs: map[string]*fakeProc{}, startupOK: func(string) bool { return true }}
	k := &Kubelet{cfg: Config{Dir: t.TempDir(), NodeName: "wss-node", VolumeRefreshPeriod: time.Minute},
		client: cs, rt: rt, net: net, workers: map[string]*podWorker{}}
	w := newPodWorker(k, pod)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return cs, rt
}

func TestWorkerUnknownImageIsErrImagePull(t *testing.T) {
	pod := sidecarPod()
	pod.Spec.InitContainers = nil
	pod.Spec.Containers[0].Image = "unknown/nginx:1"
	cs, rt := startWorker(t, pod)
	p := waitPod(t, cs, "ErrImagePull", func(p *v1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].State.Waiting != nil && s[0].State.Waiting.Reason == "ErrImagePull"
	})
	if p.Status.Phase != v1.PodPending || !strings.Contains(p.Status.ContainerStatuses[0].State.Waiting.Message, "unknown/nginx") {
		t.Fatalf("status %+v", p.Status)
	}
	if len(rt.snapshot()) != 0 {
		t.Fatalf("nothing may start: %q", rt.snapshot())
	}
}

func TestWorkerExplainsUnsupportedPod(t *testing.T) {
	pod := sidecarPod()
	pod.Spec.HostNetwork = true
	cs, rt := startWorker(t, pod)
	p := waitPod(t, cs, "Failed", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodFailed })
	if p.Status.Reason != "UnsupportedByWssCluster" || !strings.Contains(p.Status.Message, "hostNetwork") {
		t.Fatalf("status reason %q message %q", p.Status.Reason, p.Status.Message)
	}
	if len(rt.snapshot()) != 0 {
		t.Fatalf("nothing may start: %q", rt.snapshot())
	}
}
