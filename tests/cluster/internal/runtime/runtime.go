// Package runtime runs a container as processes rooted in its image's file system.
//
// A container is `/proc/self/exe container-init` cloned into new mount, PID and IPC
// namespaces; that init joins the pod's network and UTS namespaces, builds the root (an
// overlay on the prepared image root), mounts /proc, a minimal /dev, /dev/shm and the
// declared binds, pivot_roots, drops privileges and execs the container's program, which
// is then PID 1 of its PID namespace (as with containerd/runc without an init: a signal
// without a handler is ignored, so SIGTERM to `sleep` does nothing and the kubelet's SIGKILL
// ends it). Layout on disk: DIR/images/<image>/<hash>/ (image roots) and
// DIR/kubelet/containers/<pod uid>/<container>/{upper,work,rootfs} (fresh for every start).
package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
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
	// Netns is the pod's network namespace file; empty: a new network namespace of its own.
	Netns string
	// HostNetwork: stay in this process's (the node's) network and UTS namespaces, as
	// containerd does for a sandbox with NamespaceMode NODE (it leaves out the network and
	// the UTS namespace; the hostname is the node's).
	HostNetwork bool
	LogPath     string
	// SupplementalGroups are extra group ids (pod securityContext supplementalGroups/fsGroup).
	SupplementalGroups []int64
}

// StartError says the container was created but its program could not be started (the
// kubelet's StartError / RunContainerError, exit code 128 in containerd).
type StartError struct{ Msg string }

func (e *StartError) Error() string { return "container start: " + e.Msg }

// Process is a started container.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	code int
	err  error
	key  string
	uid  uint32
	gid  uint32
	grps []uint32
	env  []string
	cwd  string
}

var (
	runningMu sync.Mutex
	running   = map[string]*Process{} // PodUID/Container -> the live process, for Exec
)

func key(s Spec) string { return s.PodUID + "/" + s.Container }

// initConfig is what the parent sends the container-init on fd 3, as JSON.
type initConfig struct {
	Mode string // "start" or "exec"
	// start
	Lower, Upper, Work, Rootfs string
	Netns, UTS                 string
	ReadOnlyRoot               bool
	Mounts                     []Mount
	// exec
	TargetPid int
	// both
	Argv   []string
	Env    []string
	Cwd    string
	UID    uint32
	GID    uint32
	Groups []uint32
}

// Start starts the container and returns once its program runs (or failed to start).
func Start(spec Spec) (*Process, error) {
	if err := validate(spec); err != nil {
		return nil, err
	}
	img, err := ResolveImage(spec.Image)
	if err != nil {
		return nil, err
	}
	lower, binds, err := img.prepare(spec.Dir)
	if err != nil {
		return nil, err
	}
	argv := commandLine(img, spec.Command, spec.Args)
	if len(argv) == 0 {
		return nil, fmt.Errorf("runtime: container %s: no command (image has no entrypoint/cmd)", spec.Container)
	}
	cfg := initConfig{Mode: "start", Lower: lower, Netns: spec.Netns, ReadOnlyRoot: spec.ReadOnlyRoot, Argv: argv}
	cfg.UID, cfg.GID, cfg.Groups = credentials(img, spec)
	// containerd's CRI plugin: image env, then HOSTNAME, then the container's env; HOME from
	// the user's passwd entry when nobody set it.
	host := hostname(spec.PodName)
	if spec.HostNetwork {
		if host, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("runtime: hostname: %w", err)
		}
	}
	cfg.Env = mergeEnv(append(append([]string{}, img.Env...), "HOSTNAME="+host), spec.Env)
	if !hasEnv(cfg.Env, "HOME") {
		cfg.Env = append(cfg.Env, "HOME="+img.home(int64(cfg.UID)))
	}
	cfg.Cwd = spec.WorkingDir
	if cfg.Cwd == "" {
		cfg.Cwd = img.WorkingDir
	}
	cfg.Mounts = append(binds, spec.Mounts...)

	cdir := filepath.Join(spec.Dir, "kubelet", "containers", spec.PodUID, spec.Container)
	if err := os.RemoveAll(cdir); err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	cfg.Upper, cfg.Work, cfg.Rootfs = filepath.Join(cdir, "upper"), filepath.Join(cdir, "work"), filepath.Join(cdir, "rootfs")
	for _, d := range []string{cfg.Upper, cfg.Work, cfg.Rootfs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	if spec.PodName != "" && !spec.HostNetwork {
		uts, err := podnet.EnsureUTS(spec.PodUID, hostname(spec.PodName))
		if err != nil {
			return nil, err
		}
		cfg.UTS = uts
	}
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o755); err != nil {
		return nil, fmt.Errorf("runtime: log dir: %w", err)
	}
	log, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("runtime: log: %w", err)
	}
	defer log.Close()

	flags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC)
	if spec.Netns == "" && !spec.HostNetwork {
		flags |= syscall.CLONE_NEWNET
	}
	cmd, errR, err := startInit(cfg, log, log, &syscall.SysProcAttr{Cloneflags: flags, Setsid: true, Pdeathsig: syscall.SIGKILL})
	if err != nil {
		return nil, err
	}
	msg, _ := io.ReadAll(errR) // EOF when the program was exec'd (the pipe is close-on-exec)
	errR.Close()
	if len(msg) > 0 {
		cmd.Wait()
		return nil, &StartError{Msg: string(msg)}
	}
	p := &Process{cmd: cmd, done: make(chan struct{}), key: key(spec), uid: cfg.UID, gid: cfg.GID, grps: cfg.Groups, env: cfg.Env, cwd: cfg.Cwd}
	runningMu.Lock()
	running[p.key] = p
	runningMu.Unlock()
	go p.reap()
	return p, nil
}

// startInit starts container-init with cfg on fd 3 and its error pipe on fd 4.
func startInit(cfg initConfig, stdout, stderr io.Writer, attr *syscall.SysProcAttr) (*exec.Cmd, *os.File, error) {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return nil, nil, err
	}
	cmd := exec.Command("/proc/self/exe", initArg)
	cmd.Env = []string{initEnv + "=1"}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{cfgR, errW}
	cmd.SysProcAttr = attr
	// A command's children may hold the output pipe after it exits: do not wait for them.
	cmd.WaitDelay = time.Second
	onForkThread(func() { err = cmd.Start() })
	cfgR.Close()
	errW.Close()
	if err != nil {
		cfgW.Close()
		errR.Close()
		return nil, nil, fmt.Errorf("runtime: start container-init: %w", err)
	}
	if err := json.NewEncoder(cfgW).Encode(cfg); err != nil {
		cfgW.Close()
		errR.Close()
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, fmt.Errorf("runtime: send config to container-init: %w", err)
	}
	cfgW.Close()
	return cmd, errR, nil
}

func (p *Process) reap() {
	err := p.cmd.Wait()
	p.code, p.err = exitCode(p.cmd.ProcessState, err)
	runningMu.Lock()
	if running[p.key] == p {
		delete(running, p.key)
	}
	runningMu.Unlock()
	close(p.done)
}

// exitCode reports a process's exit status as a container runtime does: the exit code, or
// 128+signal when a signal ended it (137 for SIGKILL, 143 for SIGTERM).
func exitCode(ps *os.ProcessState, err error) (int, error) {
	if ps == nil {
		return -1, err
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ps.ExitCode(), nil
}

// Signal sends sig to the container's PID 1.
func (p *Process) Signal(sig os.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits for the container to exit and returns its exit code; it may be called many
// times and from many goroutines.
func (p *Process) Wait() (int, error) {
	<-p.done
	return p.code, p.err
}

// Done is closed when the container has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Pid is the container init's pid on the host.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

func validate(s Spec) error {
	var missing []string
	for name, v := range map[string]string{"Dir": s.Dir, "PodUID": s.PodUID, "Container": s.Container, "LogPath": s.LogPath} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("runtime: spec lacks %s", strings.Join(missing, ", "))
	}
	if strings.ContainsAny(s.Container+s.PodUID, "/\x00") || s.Container == "." || s.Container == ".." {
		return fmt.Errorf("runtime: bad container name %q or pod uid %q", s.Container, s.PodUID)
	}
	if strings.ContainsAny(s.Dir, ",:") {
		return fmt.Errorf("runtime: Dir %q: overlay options cannot hold ',' or ':'", s.Dir)
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Target) || m.Source == "" {
			return fmt.Errorf("runtime: mount %+v: want a host Source and an absolute Target", m)
		}
	}
	return nil
}

// commandLine applies Kubernetes' command/args rules to the image config: command replaces
// ENTRYPOINT and drops CMD; args alone replace CMD; neither: ENTRYPOINT + CMD. Documented on
// Container.Command/Args in staging/src/k8s.io/api/core/v1/types.go; the kubelet passes
// both through (pkg/kubelet/kuberuntime/kuberuntime_container.go generateContainerConfig,
// after $(VAR) expansion in pkg/kubelet/container/helpers.go ExpandContainerCommandAndArgs)
// and the CRI runtime merges them with the image as here.
func commandLine(img *Image, command, args []string) []string {
	if len(command) > 0 {
		return append(append([]string{}, command...), args...)
	}
	if len(args) > 0 {
		return append(append([]string{}, img.Entrypoint...), args...)
	}
	return append(append([]string{}, img.Entrypoint...), img.Cmd...)
}

// credentials: runAsUser/runAsGroup, else the image's USER; a runAsUser without runAsGroup
// takes the uid's group from the image's /etc/passwd (0 when absent), as containerd does.
func credentials(img *Image, s Spec) (uid, gid uint32, groups []uint32) {
	u, g := img.UID, img.GID
	if s.UID != nil {
		u = *s.UID
		g = img.lookupGID(u)
	}
	if s.GID != nil {
		g = *s.GID
	}
	for _, x := range s.SupplementalGroups {
		groups = append(groups, uint32(x))
	}
	return uint32(u), uint32(g), groups
}

// mergeEnv: image env first, the container's env overrides by name.
func mergeEnv(image, container []string) []string {
	idx := map[string]int{}
	var out []string
	for _, kv := range append(append([]string{}, image...), container...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func hasEnv(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// RemovePodFiles removes the writable layers of a pod's containers
// (DIR/kubelet/containers/<uid>), for the kubelet once the pod is gone.
func RemovePodFiles(dir, podUID string) error {
	if dir == "" || podUID == "" || strings.ContainsAny(podUID, "/\x00") {
		return fmt.Errorf("runtime: RemovePodFiles(%q, %q): bad arguments", dir, podUID)
	}
	return os.RemoveAll(filepath.Join(dir, "kubelet", "containers", podUID))
}

// hostname is the pod name truncated as pkg/kubelet/kubelet_pods.go
// truncatePodHostnameIfNeeded does: at most 63 bytes, no trailing '-' or '.'.
func hostname(pod string) string {
	if len(pod) <= 63 {
		return pod
	}
	return strings.TrimRight(pod[:63], "-.")
}

var errNotRunning = errors.New("container is not running")
