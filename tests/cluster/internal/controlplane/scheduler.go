package controlplane

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/cache"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// schedulerFlags are kube-scheduler's own flags, parsed into its options.
func schedulerFlags(dir string) []string {
	return []string{
		"--kubeconfig=" + filepath.Join(dir, "scheduler.kubeconfig"),
		"--leader-elect=false",
		"--secure-port=0",
	}
}

// startScheduler runs kube-scheduler until ctx ends; done receives Run's result. The calls are
// those of cmd/kube-scheduler/app/server.go runCommand, without its signal handler.
func startScheduler(ctx context.Context, dir string) (<-chan error, error) {
	o := options.NewOptions()
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, f := range o.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(schedulerFlags(dir)); err != nil {
		return nil, fmt.Errorf("kube-scheduler flags: %w", err)
	}
	if err := o.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	name, err := cache.NewInformerName("kube-scheduler")
	if err != nil {
		return nil, err
	}
	o.InformerName = name
	cc, sched, err := app.Setup(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("kube-scheduler setup: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cc, sched) }()
	return done, nil
}
