package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// healthMain exits 0 iff the apiserver's /readyz is ok and the Node is Ready (the Node is not
// required while DIR/ready says the kubelet is not implemented yet).
func healthMain(args []string) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of the cluster's state (required)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *dir == "" {
		return fmt.Errorf("%w: --dir is required", errUsage)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(*dir, "kubeconfig"))
	if err != nil {
		return err
	}
	cfg.Timeout = checkTimeout
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*checkTimeout)
	defer cancel()
	body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("apiserver /readyz: %v %s", err, body)
	}
	ready, _ := os.ReadFile(filepath.Join(*dir, "ready"))
	if strings.Contains(string(ready), "kubelet") {
		return nil
	}
	if err := nodeReady(ctx, client); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}
