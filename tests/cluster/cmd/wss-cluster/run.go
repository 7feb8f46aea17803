package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/controlplane"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/dns"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/kubelet"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/network"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/serviceproxy"
)

const (
	// readyTimeout bounds the wait for the Node and the `kubernetes` Service after the
	// control plane is up.
	readyTimeout = 120 * time.Second
	// nodeStopTimeout bounds the kubelet's stop (it kills the pods) before the control plane goes.
	nodeStopTimeout = 5 * time.Second
	// controlPlaneStopTimeout bounds the control plane's stop; the whole stop stays under ~10 s.
	controlPlaneStopTimeout = 4 * time.Second
)

type runFlags struct {
	dir, repo           string
	volumeRefreshPeriod time.Duration
	endpointRemovalLag  time.Duration
}

func parseRunFlags(args []string) (runFlags, error) {
	var f runFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&f.dir, "dir", "", "directory of the cluster's state (required)")
	fs.StringVar(&f.repo, "repo", "", "repository root, where images find their binaries (default: the directory above DIR, or the working directory, that holds tests/cluster/go.mod)")
	fs.DurationVar(&f.volumeRefreshPeriod, "volume-refresh-period", 60*time.Second, "how often the kubelet rewrites Secret/ConfigMap/projected volumes (the kubelet's syncFrequency)")
	fs.DurationVar(&f.endpointRemovalLag, "endpoint-removal-lag", 0, "delay before an endpoint's removal takes effect in the Service proxy (models cloud load balancers)")
	if err := fs.Parse(args); err != nil {
		return f, fmt.Errorf("%w: %v", errUsage, err)
	}
	if f.dir == "" {
		return f, fmt.Errorf("%w: --dir is required", errUsage)
	}
	if f.volumeRefreshPeriod <= 0 {
		return f, fmt.Errorf("%w: --volume-refresh-period must be positive, got %s", errUsage, f.volumeRefreshPeriod)
	}
	if f.endpointRemovalLag < 0 {
		return f, fmt.Errorf("%w: --endpoint-removal-lag must not be negative, got %s", errUsage, f.endpointRemovalLag)
	}
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return f, err
	}
	f.dir = dir
	if f.repo == "" {
		if f.repo, err = findRepo(dir); err != nil {
			return f, err
		}
	}
	return f, nil
}

// findRepo finds the repository root above dir, else above the working directory.
func findRepo(dir string) (string, error) {
	wd, _ := os.Getwd()
	for _, start := range []string{dir, wd} {
		for d := start; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "tests", "cluster", "go.mod")); err == nil {
				return d, nil
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return "", fmt.Errorf("%w: no repository root (with tests/cluster/go.mod) above %s or %s: pass --repo", errUsage, dir, wd)
}

// runMain runs the cluster until SIGTERM or SIGINT.
func runMain(args []string) error {
	f, err := parseRunFlags(args)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return err
	}
	if err := setupLogging(f.dir); err != nil {
		return err
	}
	defer flushLogging()
	readyFile := filepath.Join(f.dir, "ready")
	os.Remove(readyFile)
	defer os.Remove(readyFile)

	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	begin := time.Now()
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }
	started := func(name string, took time.Duration) { say("started %s in %.2fs", name, took.Seconds()) }

	t := time.Now()
	netw, err := network.Setup()
	if err != nil {
		if !isStub(err) {
			return fmt.Errorf("network: %w", err)
		}
		say("network: %v (continuing without it)", err)
	} else {
		started("network", time.Since(t))
	}
	defer func() {
		if err := podnet.CleanupAll(); err != nil {
			say("podnet cleanup: %v", err)
		}
		if netw != nil {
			if err := netw.Close(); err != nil {
				say("network close: %v", err)
			}
		}
	}()

	cpCtx, cpCancel := context.WithCancel(context.Background())
	defer cpCancel()
	cp, err := controlplane.Start(cpCtx, controlplane.Config{Dir: f.dir, Started: started})
	if err != nil {
		return err
	}
	stopControlPlane := func() {
		cpCancel()
		select {
		case <-cp.Done():
			if err := cp.Wait(); err != nil {
				say("control plane stopped: %v", err)
			}
		case <-time.After(controlPlaneStopTimeout):
			say("control plane still stopping after %s; exiting anyway", controlPlaneStopTimeout)
		}
	}
	defer stopControlPlane()

	nodeCtx, nodeCancel := context.WithCancel(sigCtx)
	defer nodeCancel()
	comps := &components{failed: make(chan error, 3)}
	clientFor := func(name string) (kubernetes.Interface, error) {
		return kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cp.AdminConfig), "wss-cluster-"+name))
	}
	for _, c := range []struct {
		name string
		run  func(context.Context, kubernetes.Interface) error
	}{
		{"dns", func(ctx context.Context, cl kubernetes.Interface) error {
			return dns.Run(ctx, dns.Config{Client: cl, Kubeconfig: cp.AdminKubeconfig, Network: netw})
		}},
		{"serviceproxy", func(ctx context.Context, cl kubernetes.Interface) error {
			return serviceproxy.Run(ctx, serviceproxy.Config{Client: cl, Network: netw, EndpointRemovalLag: f.endpointRemovalLag})
		}},
		{"kubelet", func(ctx context.Context, _ kubernetes.Interface) error {
			return kubelet.Run(ctx, kubelet.Config{Dir: f.dir, Kubeconfig: cp.NodeKubeconfig, NodeName: ranges.NodeName,
				VolumeRefreshPeriod: f.volumeRefreshPeriod, RepoRoot: f.repo})
		}},
	} {
		client, err := clientFor(c.name)
		if err != nil {
			return err
		}
		comps.start(nodeCtx, c.name, func(ctx context.Context) error { return c.run(ctx, client) })
	}

	readyErr := make(chan error, 1)
	go func() { readyErr <- waitClusterReady(nodeCtx, cp, comps, started) }()
	var runErr error
	select {
	case err := <-readyErr:
		if err != nil {
			runErr = err
			break
		}
		if err := writeReady(readyFile, comps.stubbed()); err != nil {
			runErr = err
			break
		}
		if s := comps.stubbed(); len(s) > 0 {
			say("cluster ready in %.1fs (not implemented yet: %s)", time.Since(begin).Seconds(), strings.Join(s, ", "))
		} else {
			say("cluster ready in %.1fs", time.Since(begin).Seconds())
		}
		select {
		case <-sigCtx.Done():
		case err := <-comps.failed:
			runErr = err
		case <-cp.Done():
			runErr = fmt.Errorf("control plane: %v", cp.Wait())
		}
	case err := <-comps.failed:
		runErr = err
	case <-cp.Done():
		runErr = fmt.Errorf("control plane: %v", cp.Wait())
	}
	if sigCtx.Err() != nil {
		say("stopping")
	}
	os.Remove(readyFile)
	nodeCancel()
	comps.waitStopped(nodeStopTimeout, say)
	stopControlPlane()
	stopControlPlane = func() {}
	return runErr
}

// isStub tells a package that is not written yet (its stub says "not implemented") from one
// that failed. Until every package is real, run keeps going without a stub so the rest can be
// tried; a real failure is fatal.
func isStub(err error) bool { return err != nil && strings.HasSuffix(err.Error(), "not implemented") }

// components are the goroutines that run against the control plane: dns, serviceproxy, kubelet.
type components struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	stubs  []string
	failed chan error
}

func (c *components) start(ctx context.Context, name string, run func(context.Context) error) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := run(ctx)
		switch {
		case isStub(err):
			fmt.Printf("%s: %v (continuing without it)\n", name, err)
			c.mu.Lock()
			c.stubs = append(c.stubs, name)
			c.mu.Unlock()
		case ctx.Err() != nil:
			if err != nil && !errors.Is(err, context.Canceled) {
				fmt.Printf("%s stopped: %v\n", name, err)
			}
		default:
			if err == nil {
				err = errors.New("stopped on its own")
			}
			c.failed <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

// stubbed names the components that are still stubs.
func (c *components) stubbed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.stubs...)
}

func (c *components) isStubbed(name string) bool {
	for _, s := range c.stubbed() {
		if s == name {
			return true
		}
	}
	return false
}

func (c *components) waitStopped(timeout time.Duration, say func(string, ...any)) {
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		say("dns/serviceproxy/kubelet still stopping after %s; going on", timeout)
	}
}

// writeReady writes DIR/ready; its content names the components that are still stubs, which
// `health` then does not require.
func writeReady(path string, stubs []string) error {
	content := "ready\n"
	if len(stubs) > 0 {
		content = "not-implemented: " + strings.Join(stubs, " ") + "\n"
	}
	return os.WriteFile(path, []byte(content), 0o644)
}
