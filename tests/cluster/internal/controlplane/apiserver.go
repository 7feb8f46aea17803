package controlplane

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// auditPolicy records every request once, when its response is complete, without bodies: who
// did what and the status code, which is what the tests look for (403s). Stages left out:
// RequestReceived and ResponseStarted would record each request two or three times.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted", "Panic"]
rules:
- level: Metadata
`

// apiserverFlags are kube-apiserver's own flags, parsed into its own options, as
// cmd/kube-apiserver/app/testing/testserver.go does with its customFlags.
func apiserverFlags(dir, etcdURL string) []string {
	p := pki{dir: filepath.Join(dir, "pki")}
	return []string{
		"--etcd-servers=" + etcdURL,
		"--advertise-address=" + ranges.NodeIPv4,
		"--bind-address=" + ranges.NodeIPv4,
		"--secure-port=" + strconv.Itoa(ranges.APIServerPort),
		"--service-cluster-ip-range=" + ranges.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		// The default plugins (NamespaceLifecycle, ServiceAccount, MutatingAdmissionWebhook,
		// ValidatingAdmissionWebhook, ...) stay on; NodeRestriction is what kubeadm adds.
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--client-ca-file=" + p.path("ca.crt"),
		"--tls-cert-file=" + p.path("apiserver.crt"),
		"--tls-private-key-file=" + p.path("apiserver.key"),
		"--kubelet-client-certificate=" + p.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p.path("apiserver-kubelet-client.key"),
		"--service-account-issuer=https://kubernetes.default.svc." + ranges.ClusterDomain,
		"--service-account-key-file=" + p.path("sa.pub"),
		"--service-account-signing-key-file=" + p.path("sa.key"),
		"--requestheader-client-ca-file=" + p.path("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p.path("front-proxy-client.crt"),
		"--proxy-client-key-file=" + p.path("front-proxy-client.key"),
		// Webhooks and aggregated APIs are called at their Service's ready endpoints, not the
		// ClusterIP, so the apiserver needs no Service proxy of its own.
		"--enable-aggregator-routing=true",
		"--audit-log-path=" + filepath.Join(dir, "audit.log"),
		"--audit-log-format=json",
		"--audit-policy-file=" + filepath.Join(dir, "audit-policy.yaml"),
		"--profiling=false",
	}
}

// startAPIServer builds kube-apiserver's server chain from its options and runs it until ctx
// ends; done receives Run's result. The order of calls is cmd/kube-apiserver/app/server.go Run.
func startAPIServer(ctx context.Context, dir, etcdURL string) (*rest.Config, <-chan error, error) {
	if err := os.WriteFile(filepath.Join(dir, "audit-policy.yaml"), []byte(auditPolicy), 0o644); err != nil {
		return nil, nil, err
	}
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(apiserverFlags(dir, etcdURL)); err != nil {
		return nil, nil, fmt.Errorf("kube-apiserver flags: %w", err)
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, nil, err
	}
	port := strconv.Itoa(ranges.APIServerPort)
	ln, err := listenAll(net.JoinHostPort(ranges.NodeIPv4, port), net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return nil, nil, fmt.Errorf("kube-apiserver listen (is the bridge %s up with %s?): %w", ranges.Bridge, ranges.NodeIPv4, err)
	}
	s.SecureServing.Listener = ln
	completed, err := s.Complete(ctx)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		ln.Close()
		return nil, nil, fmt.Errorf("kube-apiserver options: %w", utilerrors.NewAggregate(errs))
	}
	config, err := app.NewConfig(completed)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("kube-apiserver config: %w", err)
	}
	cc, err := config.Complete()
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("kube-apiserver config: %w", err)
	}
	server, err := app.CreateServerChain(cc)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("kube-apiserver server chain: %w", err)
	}
	prepared, err := server.PrepareRun()
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("kube-apiserver prepare: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- prepared.Run(ctx) }()
	return rest.CopyConfig(server.GenericAPIServer.LoopbackClientConfig), done, nil
}
