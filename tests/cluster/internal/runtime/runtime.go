// Package runtime runs a container as processes rooted in its image's file system.
package runtime

import (
	"context"
	"errors"
	"os"
)

// Mount is one bind mount into the container.
type Mount struct {
	Source, Target string
	ReadOnly       bool
}

// Spec describes one container to start.
type Spec struct {
	Dir                        string
	PodUID, PodName, Container string
	Image                      string
	Command, Args              []string
	Env                        []string
	WorkingDir                 string
	Mounts                     []Mount
	UID, GID                   *int64
	ReadOnlyRoot               bool
	Netns                      string
	LogPath                    string
}

// Process is a started container.
type Process struct{}

// Start starts the container (stub).
func Start(spec Spec) (*Process, error) { return nil, errors.New("runtime: not implemented") }

// Signal sends sig to the container's init (stub).
func (p *Process) Signal(sig os.Signal) error { return nil }

// Wait waits for the container to exit (stub).
func (p *Process) Wait() (int, error) { return 0, errors.New("runtime: not implemented") }

// Pid is the container init's pid on the host (stub).
func (p *Process) Pid() int { return 0 }

// Exec runs cmd in the container's namespaces (stub).
func Exec(ctx context.Context, spec Spec, cmd []string) (int, []byte, error) {
	return 0, nil, errors.New("runtime: not implemented")
}

// ContainerInitMain is the hidden container-init subcommand (stub).
func ContainerInitMain() { os.Exit(1) }
