package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	initArg = "container-init"
	// initEnv marks the re-executed process, so a test binary's TestMain can dispatch too.
	initEnv = "WSS_CLUSTER_CONTAINER_INIT"
)

// IsContainerInit reports whether this process was started as a container-init (argv[1] is
// "container-init" and the marker variable is set): test binaries call it in TestMain.
func IsContainerInit() bool {
	return len(os.Args) > 1 && os.Args[1] == initArg && os.Getenv(initEnv) == "1"
}

// ContainerInitMain is the hidden container-init subcommand: it reads its config from fd 3,
// reports a setup failure on fd 4 and exits 127, else becomes the container's program
// ("start") or runs a command in a running container and exits with its code ("exec").
func ContainerInitMain() {
	// Namespaces joined with setns and capabilities are per thread: everything below runs
	// on this one thread, which also execs.
	goruntime.LockOSThread()
	unix.CloseOnExec(3)
	unix.CloseOnExec(4)
	errPipe := os.NewFile(4, "error-pipe")
	var cfg initConfig
	if err := json.NewDecoder(os.NewFile(3, "config")).Decode(&cfg); err != nil {
		fail(errPipe, fmt.Errorf("read config: %w", err))
	}
	switch cfg.Mode {
	case "start":
		fail(errPipe, startContainer(&cfg))
	case "exec":
		code, err := execInContainer(&cfg)
		if err != nil {
			fail(errPipe, err)
		}
		os.Exit(code)
	}
	fail(errPipe, fmt.Errorf("unknown mode %q", cfg.Mode))
}

func fail(errPipe *os.File, err error) {
	fmt.Fprint(errPipe, err.Error())
	os.Exit(127)
}

func setns(path string, nstype int) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, nstype); err != nil {
		return fmt.Errorf("setns %s: %w", path, err)
	}
	return nil
}

// startContainer builds the container and execs its program; it returns only on error.
func startContainer(cfg *initConfig) error {
	if cfg.Netns != "" {
		if err := setns(cfg.Netns, unix.CLONE_NEWNET); err != nil {
			return err
		}
	}
	if cfg.UTS != "" {
		if err := setns(cfg.UTS, unix.CLONE_NEWUTS); err != nil {
			return err
		}
	}
	if err := buildRoot(cfg); err != nil {
		return err
	}
	if err := dropPrivileges(cfg.UID, cfg.GID, cfg.Groups); err != nil {
		return err
	}
	if err := os.Chdir(cfg.Cwd); err != nil {
		return fmt.Errorf("working dir: %w", err)
	}
	path, err := lookPath(cfg.Argv[0], cfg.Env)
	if err != nil {
		return err
	}
	if err := syscall.Exec(path, cfg.Argv, cfg.Env); err != nil {
		return fmt.Errorf("exec %q: %w", path, err)
	}
	return nil
}

// defaultCaps is the capability set a root container keeps (containerd's and Docker's
// default, oci.DefaultSpec): CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID
// SETFCAP SETPCAP NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE. A non-root uid has none
// effective after setuid anyway.
var defaultCaps = map[int]bool{
	unix.CAP_CHOWN: true, unix.CAP_DAC_OVERRIDE: true, unix.CAP_FSETID: true, unix.CAP_FOWNER: true,
	unix.CAP_MKNOD: true, unix.CAP_NET_RAW: true, unix.CAP_SETGID: true, unix.CAP_SETUID: true,
	unix.CAP_SETFCAP: true, unix.CAP_SETPCAP: true, unix.CAP_NET_BIND_SERVICE: true,
	unix.CAP_SYS_CHROOT: true, unix.CAP_KILL: true, unix.CAP_AUDIT_WRITE: true,
}

// dropPrivileges: bounding set to defaultCaps (for root this also bounds what exec grants),
// no_new_privs, then groups, gid, uid.
func dropPrivileges(uid, gid uint32, groups []uint32) error {
	last := unix.CAP_LAST_CAP
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if !defaultCaps[c] {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
				return fmt.Errorf("drop capability %d: %w", c, err)
			}
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	gs := make([]int, 0, len(groups))
	for _, g := range groups {
		gs = append(gs, int(g))
	}
	if err := syscall.Setgroups(gs); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(int(gid)); err != nil {
		return fmt.Errorf("setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(int(uid)); err != nil {
		return fmt.Errorf("setuid %d: %w", uid, err)
	}
	// A credential change clears the parent-death signal: set it again so that the
	// container dies with the cluster process.
	return unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
}

// lookPath resolves argv[0] with the container's PATH, in the container's root.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
}
