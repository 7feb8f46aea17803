package kubelet

import (
	"context"
	"os"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/runtime"
)

// Proc is a started container (runtime.Process behind an interface for tests).
type Proc interface {
	Signal(os.Signal) error
	Wait() (int, error)
	Pid() int
}

// Runtime runs containers (the runtime package, or a fake in tests).
type Runtime interface {
	ResolveImage(image string) error
	Start(spec runtime.Spec) (Proc, error)
	Exec(ctx context.Context, spec runtime.Spec, cmd []string) (int, []byte, error)
}

// Net gives pods their network (the podnet package, or a fake in tests).
type Net interface {
	Setup(uid string) (*podnet.Pod, error)
	Teardown(uid string) error
	// SetSysctls writes the pod's net.* sysctls into its network namespace.
	SetSysctls(p *podnet.Pod, sysctls []podnet.Sysctl) error
}

type realRuntime struct{}

func (realRuntime) ResolveImage(image string) error {
	_, err := runtime.ResolveImage(image)
	return err
}

func (realRuntime) Start(spec runtime.Spec) (Proc, error) {
	p, err := runtime.Start(spec)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (realRuntime) Exec(ctx context.Context, spec runtime.Spec, cmd []string) (int, []byte, error) {
	return runtime.Exec(ctx, spec, cmd)
}

type realNet struct{}

func (realNet) Setup(uid string) (*podnet.Pod, error) { return podnet.Setup(uid) }
func (realNet) Teardown(uid string) error             { return podnet.Teardown(uid) }
func (realNet) SetSysctls(p *podnet.Pod, s []podnet.Sysctl) error {
	return podnet.SetSysctls(p, s)
}
