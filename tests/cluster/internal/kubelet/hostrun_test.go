//go:build hostrun

package kubelet

// Opt-in (`go test -tags hostrun ./internal/kubelet/`, root, no cluster running): the pod
// worker with the real runtime and podnet against a fake API server.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/runtime"
)

func TestMain(m *testing.M) {
	if runtime.IsContainerInit() {
		runtime.ContainerInitMain()
		return
	}
	remove, err := podnet.TestBridge()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	code := m.Run()
	if err := remove(); err != nil {
		fmt.Println(err)
		code = 1
	}
	os.Exit(code)
}

func TestHostRunSidecarPod(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	grace := int64(10)
	img := "curlimages/curl:8.11.1"
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "aaaabbbbcccc-0000-1111"},
		Spec: v1.PodSpec{
			NodeName: "wss-node", TerminationGracePeriodSeconds: &grace, RestartPolicy: v1.RestartPolicyAlways,
			Volumes: []v1.Volume{{Name: "shared", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}},
			InitContainers: []v1.Container{{Name: "proxy", Image: img, RestartPolicy: &always,
				Command:      []string{"sh", "-c", `trap 'echo "TERM proxy"; exit 0' TERM; sleep 1; echo up > /shared/up; while :; do sleep 0.2; done`},
				VolumeMounts: []v1.VolumeMount{{Name: "shared", MountPath: "/shared"}},
				StartupProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"test", "-f", "/shared/up"}}}, PeriodSeconds: 1, FailureThreshold: 30}}},
			Containers: []v1.Container{{Name: "app", Image: img,
				Command:      []string{"sh", "-c", `trap 'cat /shared/pre; echo "TERM app"; exit 0' TERM; echo "ip=$MY_IP"; cat /etc/resolv.conf; while :; do sleep 0.2; done`},
				Env:          []v1.EnvVar{{Name: "MY_IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
				VolumeMounts: []v1.VolumeMount{{Name: "shared", MountPath: "/shared"}},
				Lifecycle:    &v1.Lifecycle{PreStop: &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{"sh", "-c", "echo prestop-ran > /shared/pre"}}}}}},
		},
	}
	cs := fake.NewClientset(pod)
	dir := t.TempDir()
	k := &Kubelet{cfg: Config{Dir: dir, NodeName: "wss-node", VolumeRefreshPeriod: time.Minute},
		client: cs, rt: realRuntime{}, net: realNet{}, workers: map[string]*podWorker{}}
	w := newPodWorker(k, pod)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	start := time.Now()
	p := waitPodFor(t, cs, 30*time.Second, "Ready", func(p *v1.Pod) bool { return condTrue(p, v1.PodReady) })
	t.Logf("Ready after %.2fs, IPs %v", time.Since(start).Seconds(), p.Status.PodIPs)
	logs := filepath.Join(dir, "kubelet", "logs", "default_web_"+string(pod.UID))
	del := p.DeepCopy()
	now := metav1.Now()
	del.DeletionTimestamp = &now
	w.update(del)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("termination did not finish")
	}
	app, _ := os.ReadFile(filepath.Join(logs, "app", "0.log"))
	proxy, _ := os.ReadFile(filepath.Join(logs, "proxy", "0.log"))
	t.Logf("app log:\n%s\nproxy log:\n%s", app, proxy)
	if !strings.Contains(string(app), "ip="+p.Status.PodIP) || !strings.Contains(string(app), "nameserver 10.96.0.10") {
		t.Error("env or resolv.conf missing in the app")
	}
	if i, j := strings.Index(string(app), "prestop-ran"), strings.Index(string(app), "TERM app"); i < 0 || j < i {
		t.Error("preStop did not run before SIGTERM")
	}
	if !strings.Contains(string(proxy), "TERM proxy") {
		t.Error("sidecar not terminated with SIGTERM")
	}
}

func waitPodFor(t *testing.T, cs *fake.Clientset, d time.Duration, what string, ok func(*v1.Pod) bool) *v1.Pod {
	t.Helper()
	deadline := time.Now().Add(d)
	var last *v1.Pod
	for time.Now().Before(deadline) {
		p, err := cs.CoreV1().Pods("default").Get(context.Background(), "web", metav1.GetOptions{})
		if err == nil {
			last = p
			if ok(p) {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last status %+v", what, last.Status)
	return nil
}

func TestHostRunWssSidecarPod(t *testing.T) {
	if os.Getenv("WSS_SIDECAR_BIN") == "" {
		t.Skip("set WSS_SIDECAR_BIN to a wss-sidecar binary")
	}
	always := v1.ContainerRestartPolicyAlways
	img := "ghcr.io/wss-sidecar/wss-sidecar:0.1.0"
	httpProbe := func(path string, port int) v1.ProbeHandler {
		return v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: path, Port: intstrFromInt(port)}}
	}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "ddddeeeeffff-0000-1111"},
		Spec: v1.PodSpec{
			NodeName: "wss-node", RestartPolicy: v1.RestartPolicyAlways,
			InitContainers: []v1.Container{{Name: "wss-sidecar", Image: img, RestartPolicy: &always,
				Args:           []string{"proxy", "--listen", "0.0.0.0:8443", "--upstream", "127.0.0.1:8080"},
				StartupProbe:   &v1.Probe{ProbeHandler: httpProbe("/healthz", 9090), PeriodSeconds: 1, FailureThreshold: 30},
				ReadinessProbe: &v1.Probe{ProbeHandler: httpProbe("/readyz", 9090), PeriodSeconds: 1}}},
			// The kubelet probes from the host, so a probe can only reach what listens on the pod IP.
			Containers: []v1.Container{{Name: "echo", Image: img, Args: []string{"echo", "--listen", "0.0.0.0:8080"},
				ReadinessProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstrFromInt(8080)}}, PeriodSeconds: 1}}},
		},
	}
	cs := fake.NewClientset(pod)
	dir := t.TempDir()
	k := &Kubelet{cfg: Config{Dir: dir, NodeName: "wss-node", VolumeRefreshPeriod: time.Minute},
		client: cs, rt: realRuntime{}, net: realNet{}, workers: map[string]*podWorker{}}
	w := newPodWorker(k, pod)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	start := time.Now()
	p := waitPodFor(t, cs, 30*time.Second, "Ready", func(p *v1.Pod) bool { return condTrue(p, v1.PodReady) })
	t.Logf("wss-sidecar pod Ready after %.2fs, IPs %v", time.Since(start).Seconds(), p.Status.PodIPs)
	cancel() // the kubelet's stop: kill everything quickly
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("kill on ctx end did not finish")
	}
}
func intstrFromInt(i int) intstr.IntOrString { return intstr.FromInt32(int32(i)) }
