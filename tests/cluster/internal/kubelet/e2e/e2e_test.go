//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// clusterDir is WSS_CLUSTER_DIR or the repository's target/cluster.
func clusterDir(t *testing.T) string {
	if d := os.Getenv("WSS_CLUSTER_DIR"); d != "" {
		return d
	}
	d, err := filepath.Abs("../../../../../target/cluster")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func client(t *testing.T, dir string) kubernetes.Interface {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "kubeconfig"))
	if err != nil {
		t.Fatalf("no cluster (run scripts/cluster up): %v", err)
	}
	cfg.Timeout = 20 * time.Second
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventually polls f until it returns true or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, f func() (bool, error)) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < within {
		ok, err := f()
		if ok {
			return time.Since(start)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s (last error %v)", what, within, last)
	return 0
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return c
}

const shImage = "curlimages/curl:8.11.1"

func TestSidecarReadySecretRotationAndPreStop(t *testing.T) {
	cdir := clusterDir(t)
	c := client(t, cdir)
	node, err := c.CoreV1().Nodes().Get(ctx(t), "wss-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	refresh, err := strconv.Atoi(node.Annotations["wss-cluster.test/volume-refresh-seconds"])
	if err != nil || refresh <= 0 {
		t.Fatalf("Node annotation wss-cluster.test/volume-refresh-seconds = %q", node.Annotations["wss-cluster.test/volume-refresh-seconds"])
	}

	ns := fmt.Sprintf("e2e-kubelet-%d", time.Now().UnixNano()%1_000_000)
	if _, err := c.CoreV1().Namespaces().Create(ctx(t), &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = c.CoreV1().Namespaces().Delete(cc, ns, metav1.DeleteOptions{})
	})
	secret := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "rot"}, Data: map[string][]byte{"v": []byte("one")}}
	if _, err := c.CoreV1().Secrets(ns).Create(ctx(t), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	always := v1.ContainerRestartPolicyAlways
	grace := int64(20)
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: v1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Volumes: []v1.Volume{
				{Name: "shared", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
				{Name: "rot", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "rot"}}},
			},
			InitContainers: []v1.Container{{
				Name: "proxy", Image: shImage, RestartPolicy: &always,
				Command:      []string{"sh", "-c", `trap 'echo "TERM proxy"; exit 0' TERM; sleep 1; echo up > /shared/up; while :; do sleep 0.2; done`},
				VolumeMounts: []v1.VolumeMount{{Name: "shared", MountPath: "/shared"}},
				StartupProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"test", "-f", "/shared/up"}}},
					PeriodSeconds: 1, FailureThreshold: 30},
				Lifecycle: &v1.Lifecycle{PreStop: &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{"sh", "-c", "echo x > /shared/prestop-proxy"}}}},
			}},
			Containers: []v1.Container{{
				Name: "app", Image: shImage,
				Command: []string{"sh", "-c", `trap 'cat /shared/prestop-app; echo "TERM app"; exit 0' TERM; ` +
					`while :; do echo "secret=$(cat /secret/v)"; sleep 0.5; done`},
				VolumeMounts: []v1.VolumeMount{{Name: "shared", MountPath: "/shared"}, {Name: "rot", MountPath: "/secret", ReadOnly: true}},
				ReadinessProbe: &v1.Probe{ProbeHandler: v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"test", "-f", "/shared/up"}}},
					PeriodSeconds: 1},
				Lifecycle: &v1.Lifecycle{PreStop: &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{"sh", "-c", "echo prestop-ran > /shared/prestop-app; sleep 1"}}}},
			}},
		},
	}
	created, err := c.CoreV1().Pods(ns).Create(ctx(t), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got *v1.Pod
	readyIn := eventually(t, 60*time.Second, "pod Ready", func() (bool, error) {
		p, err := c.CoreV1().Pods(ns).Get(ctx(t), "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		got = p
		for _, cond := range p.Status.Conditions {
			if cond.Type == v1.PodReady && cond.Status == v1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("status %+v", p.Status)
	})
	t.Logf("pod Ready %.1fs after create", readyIn.Seconds())
	if len(got.Status.PodIPs) != 2 || !strings.HasPrefix(got.Status.PodIP, "10.244.0.") {
		t.Errorf("pod IPs %v", got.Status.PodIPs)
	}
	if s := got.Status.InitContainerStatuses; len(s) != 1 || s[0].Started == nil || !*s[0].Started {
		t.Errorf("sidecar status %+v", s)
	}

	logs := filepath.Join(cdir, "kubelet", "logs", fmt.Sprintf("%s_%s_%s", ns, "web", created.UID))
	appLog := filepath.Join(logs, "app", "0.log")
	eventually(t, 10*time.Second, "app log shows the first secret", func() (bool, error) {
		b, err := os.ReadFile(appLog)
		return strings.Contains(string(b), "secret=one"), err
	})
	secret.Data["v"] = []byte("two")
	if _, err := c.CoreV1().Secrets(ns).Update(ctx(t), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rotIn := eventually(t, time.Duration(refresh+5)*time.Second, "rotated secret visible in the container", func() (bool, error) {
		b, err := os.ReadFile(appLog)
		return strings.Contains(string(b), "secret=two"), err
	})
	t.Logf("secret rotation visible %.1fs after update (refresh period %ds)", rotIn.Seconds(), refresh)

	if err := c.CoreV1().Pods(ns).Delete(ctx(t), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 40*time.Second, "pod gone", func() (bool, error) {
		_, err := c.CoreV1().Pods(ns).Get(ctx(t), "web", metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	b, err := os.ReadFile(appLog)
	if err != nil {
		t.Fatal(err)
	}
	app := string(b)
	if i, j := strings.Index(app, "prestop-ran"), strings.Index(app, "TERM app"); i < 0 || j < 0 || i > j {
		t.Errorf("app must see its preStop's file when SIGTERM arrives; log tail %q", tail(app))
	}
	pb, _ := os.ReadFile(filepath.Join(logs, "proxy", "0.log"))
	if !strings.Contains(string(pb), "TERM proxy") {
		t.Errorf("sidecar did not get SIGTERM; log %q", tail(string(pb)))
	}
}

func tail(s string) string {
	if len(s) > 300 {
		return s[len(s)-300:]
	}
	return s
}
