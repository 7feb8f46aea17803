// Package controlplane runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler
// in this process, through their options and configs.
package controlplane

import (
	"context"
	"errors"

	"k8s.io/client-go/rest"
)

// Config is what Start needs.
type Config struct {
	Dir string
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	AdminKubeconfig string
	NodeKubeconfig  string
	AdminConfig     *rest.Config
	CAFile          string
}

// Start starts the control plane (stub).
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	return nil, errors.New("controlplane: not implemented")
}

// Wait returns when every component has stopped (stub).
func (c *ControlPlane) Wait() error { return nil }
