package runtime

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxExecOutput bounds what Exec keeps of a command's output (the kubelet's exec prober
// keeps far less); the rest is read and dropped so the command never blocks on a full pipe.
const maxExecOutput = 1 << 20

// Exec runs cmd inside the running container of spec (same PodUID and Container as a live
// Start), in its mount, PID, network, UTS and IPC namespaces, with its uid/gid, env and
// working dir, and returns the exit code and combined stdout+stderr. ctx bounds it: at the
// deadline the command is killed and the error wraps ctx.Err(). Like a CRI runtime, Exec in
// a container that is not running is an error.
func Exec(ctx context.Context, spec Spec, cmd []string) (int, []byte, error) {
	if len(cmd) == 0 {
		return -1, nil, fmt.Errorf("runtime: exec in %s: empty command", spec.Container)
	}
	runningMu.Lock()
	p := running[key(spec)]
	runningMu.Unlock()
	if p == nil {
		return -1, nil, fmt.Errorf("runtime: exec in %s of pod %s: %w", spec.Container, spec.PodUID, errNotRunning)
	}
	cfg := initConfig{Mode: "exec", TargetPid: p.Pid(), Argv: cmd, Env: p.env, Cwd: p.cwd, UID: p.uid, GID: p.gid, Groups: p.grps}
	out := &limitedBuffer{max: maxExecOutput}
	c, errR, err := startInit(cfg, out, out, &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL})
	if err != nil {
		return -1, nil, err
	}
	var setupErr []byte
	readDone := make(chan struct{})
	go func() { setupErr, _ = io.ReadAll(errR); errR.Close(); close(readDone) }()
	waitDone := make(chan error, 1)
	go func() { waitDone <- c.Wait() }()
	select {
	case err = <-waitDone:
	case <-ctx.Done():
		// The helper kills the command on SIGTERM; SIGKILL after a second if it hangs.
		c.Process.Signal(syscall.SIGTERM)
		select {
		case <-waitDone:
		case <-time.After(time.Second):
			c.Process.Kill()
			<-waitDone
		}
		<-readDone
		return -1, out.Bytes(), fmt.Errorf("runtime: exec %q in %s: %w", cmd, spec.Container, ctx.Err())
	}
	<-readDone
	if len(setupErr) > 0 {
		return -1, out.Bytes(), fmt.Errorf("runtime: exec %q in %s: %s", cmd, spec.Container, setupErr)
	}
	code, err := exitCode(c.ProcessState, err)
	return code, out.Bytes(), err
}

// execInContainer (in the helper process) joins the target's namespaces and root, runs the
// command as a child (setns into a PID namespace applies to children) and returns its code.
func execInContainer(cfg *initConfig) (int, error) {
	ns := func(n string) string { return fmt.Sprintf("/proc/%d/ns/%s", cfg.TargetPid, n) }
	rootFd, err := unix.Open(fmt.Sprintf("/proc/%d/root", cfg.TargetPid), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open container root: %w", err)
	}
	// setns into a mount namespace needs a thread that does not share its fs struct.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return -1, fmt.Errorf("unshare fs: %w", err)
	}
	for _, n := range []struct {
		name string
		typ  int
	}{{"ipc", unix.CLONE_NEWIPC}, {"uts", unix.CLONE_NEWUTS}, {"net", unix.CLONE_NEWNET}, {"pid", unix.CLONE_NEWPID}, {"mnt", unix.CLONE_NEWNS}} {
		if err := setns(ns(n.name), n.typ); err != nil {
			return -1, err
		}
	}
	if err := unix.Fchdir(rootFd); err != nil {
		return -1, err
	}
	if err := unix.Chroot("."); err != nil {
		return -1, fmt.Errorf("chroot container root: %w", err)
	}
	unix.Close(rootFd)
	if err := unix.Chdir(cfg.Cwd); err != nil {
		return -1, fmt.Errorf("working dir %s: %w", cfg.Cwd, err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, err
	}
	path, err := lookPath(cfg.Argv[0], cfg.Env)
	if err != nil {
		return -1, err
	}
	// This goroutine is locked to the thread that joined the namespaces; fork happens from it.
	c := exec.Cmd{Path: path, Args: cfg.Argv, Env: cfg.Env, Stdin: nil, Stdout: os.Stdout, Stderr: os.Stderr}
	c.SysProcAttr = &syscall.SysProcAttr{
		// No Pdeathsig: its parent is outside its PID namespace, so Go's "parent already
		// dead?" check (getppid() == 0 there) would kill it at once. The helper kills it on
		// SIGTERM instead (Exec sends that when ctx ends).
		Credential: &syscall.Credential{Uid: cfg.UID, Gid: cfg.GID, Groups: cfg.Groups},
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	if err := c.Start(); err != nil {
		return -1, fmt.Errorf("exec %q: %w", cfg.Argv[0], err)
	}
	go func() { <-term; c.Process.Kill() }()
	code, _ := exitCode(waitState(&c))
	return code, nil
}

func waitState(c *exec.Cmd) (*os.ProcessState, error) {
	err := c.Wait()
	return c.ProcessState, err
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}
