package kubelet

import (
	"context"
	"fmt"
	"strconv"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/probe"
	httpprobe "k8s.io/kubernetes/pkg/probe/http"
	tcpprobe "k8s.io/kubernetes/pkg/probe/tcp"
)

// probeState is the threshold machine of pkg/kubelet/prober/worker.go doProbe: a result
// changes only after successThreshold successes or failureThreshold failures in a row.
type probeState struct {
	successThreshold, failureThreshold int
	last                               bool
	run                                int
	result                             bool
}

func newProbeState(p *v1.Probe, initial bool) *probeState {
	s := &probeState{successThreshold: int(p.SuccessThreshold), failureThreshold: int(p.FailureThreshold), result: initial}
	// pkg/apis/core/v1/defaults.go: thresholds default to 1 and 3.
	if s.successThreshold < 1 {
		s.successThreshold = 1
	}
	if s.failureThreshold < 1 {
		s.failureThreshold = 3
	}
	return s
}

// observe records one probe outcome and returns the (possibly new) result.
func (s *probeState) observe(ok bool) bool {
	if s.run > 0 && ok == s.last {
		s.run++
	} else {
		s.last, s.run = ok, 1
	}
	if (!ok && s.run < s.failureThreshold) || (ok && s.run < s.successThreshold) {
		return s.result
	}
	s.result = ok
	return s.result
}

// reset forgets the run (worker.go resets resultRun after a liveness/startup kill).
func (s *probeState) reset() { s.run = 0 }

// periods returns the probe's initial delay, period and timeout with the API defaults.
func periods(p *v1.Probe) (initial, period, timeout time.Duration) {
	period, timeout = 10*time.Second, time.Second
	if p.PeriodSeconds > 0 {
		period = time.Duration(p.PeriodSeconds) * time.Second
	}
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	return time.Duration(p.InitialDelaySeconds) * time.Second, period, timeout
}

// execHandler runs a handler (probe or lifecycle hook) once: pkg/kubelet/prober/prober.go
// runProbe and pkg/kubelet/lifecycle/handlers.go.
type handlerRunner struct {
	exec  func(ctx context.Context, cmd []string) (int, []byte, error)
	podIP string
}

func (h *handlerRunner) httpGet(a *v1.HTTPGetAction, c *v1.Container, timeout time.Duration, purpose string) error {
	req, err := httpprobe.NewRequestForHTTPGetAction(a, c, h.podIP, purpose)
	if err != nil {
		return err
	}
	res, out, err := httpprobe.New(false).Probe(req, timeout)
	return result(res, out, err)
}

func (h *handlerRunner) tcp(a *v1.TCPSocketAction, c *v1.Container, timeout time.Duration) error {
	port, err := resolvePort(a.Port.String(), c)
	if err != nil {
		return err
	}
	host := a.Host
	if host == "" {
		host = h.podIP
	}
	res, out, err := tcpprobe.New().Probe(host, port, timeout)
	return result(res, out, err)
}

func (h *handlerRunner) run(ctx context.Context, cmd []string, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	code, out, err := h.exec(cctx, cmd)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("command %q exited with %d: %s", cmd, code, truncate(out))
	}
	return nil
}

// probeOnce runs one probe of c.
func (h *handlerRunner) probeOnce(ctx context.Context, p *v1.Probe, c *v1.Container) error {
	_, _, timeout := periods(p)
	switch {
	case p.Exec != nil:
		return h.run(ctx, p.Exec.Command, timeout)
	case p.HTTPGet != nil:
		return h.httpGet(p.HTTPGet, c, timeout, "probe")
	case p.TCPSocket != nil:
		return h.tcp(p.TCPSocket, c, timeout)
	case p.GRPC != nil:
		return fmt.Errorf("grpc probes are not supported by wss-cluster's kubelet")
	}
	return fmt.Errorf("probe has no handler")
}

func result(res probe.Result, out string, err error) error {
	if err != nil {
		return err
	}
	if res != probe.Success && res != probe.Warning {
		return fmt.Errorf("probe %s: %s", res, truncate([]byte(out)))
	}
	return nil
}

// resolvePort is pkg/kubelet/prober/prober.go's port lookup: a number or a named port.
func resolvePort(port string, c *v1.Container) (int, error) {
	if n, err := strconv.Atoi(port); err == nil {
		return n, nil
	}
	for _, p := range c.Ports {
		if p.Name == port {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %q has no port named %q", c.Name, port)
}

func truncate(b []byte) string {
	if len(b) > 256 {
		b = b[:256]
	}
	return string(b)
}
