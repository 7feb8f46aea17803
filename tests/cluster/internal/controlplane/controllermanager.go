package controlplane

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/pflag"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app/options"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// controllerManagerFlags are kube-controller-manager's own flags, parsed into its options as
// cmd/kube-controller-manager/app/testing/testserver.go does.
func controllerManagerFlags(dir string) []string {
	p := pki{dir: filepath.Join(dir, "pki")}
	return []string{
		"--kubeconfig=" + filepath.Join(dir, "controller-manager.kubeconfig"),
		// Every controller that is on by default (deployment, replicaset, endpoints,
		// endpointslice, serviceaccount, serviceaccount-token, root-ca-cert-publisher,
		// namespace, garbage collector, disruption, job, ...).
		"--controllers=*",
		// Each controller acts as its own ServiceAccount under RBAC, as kubeadm runs it.
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + p.path("sa.key"),
		"--root-ca-file=" + p.path("ca.crt"),
		"--cluster-signing-cert-file=" + p.path("ca.crt"),
		"--cluster-signing-key-file=" + p.path("ca.key"),
		// The kubelet sets the Node's podCIDRs itself; node IPAM stays off.
		"--allocate-node-cidrs=false",
		"--service-cluster-ip-range=" + ranges.ServiceCIDR,
		// One process: nobody to elect against, and no lease wait at start.
		"--leader-elect=false",
		// No serving port: health is read from the apiserver, and no port can collide.
		"--secure-port=0",
		"--controller-shutdown-timeout=5s",
		"--profiling=false",
	}
}

// startControllerManager runs kube-controller-manager until ctx ends; done receives Run's result.
func startControllerManager(ctx context.Context, dir string) (<-chan error, error) {
	s, err := options.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, err
	}
	all, disabled, aliases := app.KnownControllers(), app.ControllersDisabledByDefault(), app.ControllerAliases()
	named := s.Flags(all, disabled, aliases)
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range named.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(controllerManagerFlags(dir)); err != nil {
		return nil, fmt.Errorf("kube-controller-manager flags: %w", err)
	}
	s.ParsedFlags = &named
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	c, err := s.Config(ctx, all, disabled, aliases)
	if err != nil {
		return nil, fmt.Errorf("kube-controller-manager config: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, c.Complete()) }()
	return done, nil
}
