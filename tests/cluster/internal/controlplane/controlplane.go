// Package controlplane runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler
// in this process, each through its own options and config (not its cobra command).
//
// Files in Config.Dir: pki/ (kept across starts), etcd/ (wiped at every start), etcd.log,
// audit.log, audit-policy.yaml, kubeconfig (cluster-admin), kubelet/kubeconfig (the Node's
// credentials), controller-manager.kubeconfig, scheduler.kubeconfig.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// readyTimeout bounds the wait for the apiserver's /readyz after it starts serving.
const readyTimeout = 90 * time.Second

// Config is what Start needs.
type Config struct {
	// Dir holds every file of the control plane (see the package doc).
	Dir string
	// Started, if set, is told each component's name and how long it took to start.
	Started func(component string, took time.Duration)
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	// AdminKubeconfig is DIR/kubeconfig: cluster-admin (O=system:masters), https://127.0.0.1:6443.
	AdminKubeconfig string
	// NodeKubeconfig is DIR/kubelet/kubeconfig: CN=system:node:wss-node, O=system:nodes.
	NodeKubeconfig string
	// AdminConfig is AdminKubeconfig loaded (no client Timeout, so watches last: give every
	// call a context deadline).
	AdminConfig *rest.Config
	// CAFile is DIR/pki/ca.crt, the CA of the apiserver's serving and client certificates.
	CAFile string

	stopped chan struct{}
	err     error
}

// Start makes or reuses the PKI, starts a fresh etcd, then kube-apiserver, waits until it is
// ready, then starts kube-controller-manager and kube-scheduler. Everything stops when ctx
// ends or when any component fails; Wait reports which.
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	if cfg.Dir == "" {
		return nil, errors.New("controlplane: Config.Dir is empty")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	started := cfg.Started
	if started == nil {
		started = func(string, time.Duration) {}
	}
	p := pki{dir: filepath.Join(dir, "pki")}
	cp := &ControlPlane{
		AdminKubeconfig: filepath.Join(dir, "kubeconfig"),
		NodeKubeconfig:  filepath.Join(dir, "kubelet", "kubeconfig"),
		CAFile:          p.path("ca.crt"),
		stopped:         make(chan struct{}),
	}

	t := time.Now()
	if err := p.ensure(); err != nil {
		return nil, fmt.Errorf("controlplane: pki: %w", err)
	}
	for path, user := range map[string]string{
		cp.AdminKubeconfig: "admin",
		cp.NodeKubeconfig:  "kubelet-client",
		filepath.Join(dir, "controller-manager.kubeconfig"): "controller-manager",
		filepath.Join(dir, "scheduler.kubeconfig"):          "scheduler",
	} {
		if err := p.writeKubeconfig(path, user); err != nil {
			return nil, fmt.Errorf("controlplane: kubeconfig: %w", err)
		}
	}
	if cp.AdminConfig, err = clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	started("pki", time.Since(t))

	ctx, cancel := context.WithCancel(ctx)
	t = time.Now()
	etcd, etcdURL, err := startEtcd(dir)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	started("etcd", time.Since(t))

	g := &group{cancel: cancel}
	fail := func(err error) (*ControlPlane, error) {
		cancel()
		g.wait()
		etcd.Close()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	t = time.Now()
	_, apiDone, err := startAPIServer(ctx, dir, etcdURL)
	if err != nil {
		return fail(err)
	}
	g.add(ctx, "kube-apiserver", apiDone)
	if err := waitReady(ctx, cp.AdminConfig, apiDone); err != nil {
		return fail(err)
	}
	started("kube-apiserver", time.Since(t))

	t = time.Now()
	kcmDone, err := startControllerManager(ctx, dir)
	if err != nil {
		return fail(err)
	}
	g.add(ctx, "kube-controller-manager", kcmDone)
	started("kube-controller-manager", time.Since(t))

	t = time.Now()
	schedDone, err := startScheduler(ctx, dir)
	if err != nil {
		return fail(err)
	}
	g.add(ctx, "kube-scheduler", schedDone)
	started("kube-scheduler", time.Since(t))

	go func() {
		g.wait()
		// etcd last: the apiserver drains its requests against it first.
		etcd.Close()
		cp.err = g.firstErr
		close(cp.stopped)
	}()
	go func() {
		select {
		case err := <-etcd.Err():
			g.record(fmt.Errorf("etcd: %w", err))
			cancel()
		case <-ctx.Done():
		}
	}()
	return cp, nil
}

// Wait returns when every component has stopped: nil after the context ended, else the
// first component's failure (which stopped the others).
func (c *ControlPlane) Wait() error {
	<-c.stopped
	return c.err
}

// Done is closed when every component has stopped.
func (c *ControlPlane) Done() <-chan struct{} { return c.stopped }

// waitReady polls /readyz until it answers ok, the apiserver exits, or readyTimeout passes.
func waitReady(ctx context.Context, cfg *rest.Config, apiDone <-chan error) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		cancel()
		if err == nil && string(body) == "ok" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after %s: %v %s", readyTimeout, err, body)
		}
		select {
		case err := <-apiDone:
			return fmt.Errorf("kube-apiserver stopped while starting: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// group tracks the components' goroutines; the first to stop on its own cancels the rest.
type group struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	firstErr error
}

func (g *group) add(ctx context.Context, name string, done <-chan error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := <-done
		if ctx.Err() == nil {
			if err == nil {
				err = errors.New("stopped")
			}
			g.record(fmt.Errorf("%s: %w", name, err))
			g.cancel()
		}
	}()
}

func (g *group) record(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.firstErr == nil {
		g.firstErr = err
	}
}

func (g *group) wait() { g.wg.Wait() }
