// Package kubelet is a process kubelet for the cluster's one Node.
package kubelet

import (
	"context"
	"errors"
	"time"
)

// Config is what Run needs.
type Config struct {
	Dir                 string
	Kubeconfig          string
	NodeName            string
	VolumeRefreshPeriod time.Duration
	RepoRoot            string
}

// Run registers the Node and runs its pods until ctx ends (stub).
func Run(ctx context.Context, cfg Config) error { return errors.New("kubelet: not implemented") }
