package runtime

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
)

// TestMain dispatches the re-executed test binary: as container-init (the runtime re-execs
// /proc/self/exe), or as the program of the wss-sidecar image (WSS_SIDECAR_BIN points at
// this binary), where WSSCL_PROBE asks it to report what it sees.
func TestMain(m *testing.M) {
	if IsContainerInit() {
		ContainerInitMain()
		return
	}
	if probe := os.Getenv("WSSCL_PROBE"); probe != "" {
		runProbe(probe)
		return
	}
	if os.Geteuid() != 0 {
		fmt.Println("runtime tests need root (namespaces, mounts)")
		os.Exit(0)
	}
	remove, err := podnet.TestBridge()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	code := m.Run()
	if err := remove(); err != nil {
		fmt.Println(err)
		code = 1
	}
	os.Exit(code)
}

// runProbe prints args, uid, hostname and the outcome of reading host paths.
func runProbe(probe string) {
	fmt.Printf("args=%q uid=%d gid=%d\n", os.Args[1:], os.Getuid(), os.Getgid())
	h, _ := os.Hostname()
	fmt.Printf("hostname=%s\n", h)
	for _, p := range strings.Split(probe, ",") {
		if ents, err := os.ReadDir(p); err == nil {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			fmt.Printf("ls %s: %s\n", p, strings.Join(names, " "))
		} else if _, err := os.ReadFile(p); err != nil {
			fmt.Printf("read %s: %v\n", p, err)
		} else {
			fmt.Printf("read %s: ok\n", p)
		}
	}
	os.Exit(0)
}

type pod struct {
	uid, name string
	net       *podnet.Pod
	dir       string
}

func newPod(t *testing.T) *pod {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	uid := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	n, err := podnet.Setup(uid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { podnet.Teardown(uid) })
	return &pod{uid: uid, name: "pod-" + uid[:8], net: n, dir: t.TempDir()}
}

func (p *pod) spec(container, image string, command ...string) Spec {
	return Spec{
		Dir: p.dir, PodUID: p.uid, PodName: p.name, Container: container, Image: image,
		Command: command, Netns: p.net.Netns,
		LogPath: filepath.Join(p.dir, "logs", container, "0.log"),
	}
}

// run starts the container, waits for its exit and returns the exit code and its log.
func run(t *testing.T, s Spec) (int, string) {
	t.Helper()
	pr, err := Start(s)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { pr.Signal(syscall.SIGKILL); pr.Wait() })
	code, err := pr.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	log, _ := os.ReadFile(s.LogPath)
	return code, string(log)
}

func start(t *testing.T, s Spec) *Process {
	t.Helper()
	pr, err := Start(s)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { pr.Signal(syscall.SIGKILL); pr.Wait() })
	return pr
}

// awaitLog waits until the container's log contains want.
func awaitLog(t *testing.T, s Spec, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(s.LogPath); strings.Contains(string(b), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b, _ := os.ReadFile(s.LogPath)
	t.Fatalf("log never showed %q: %q", want, b)
}

const curl = "docker.io/curlimages/curl:8.11.1"

func TestUnknownImageIsAnImageError(t *testing.T) {
	p := newPod(t)
	for _, image := range []string{"nginx:1.27", "ghcr.io/x/wss-sidecar-other:1", ""} {
		_, err := Start(p.spec("c", image, "true"))
		var ie *ImageError
		if !errors.As(err, &ie) {
			t.Errorf("Start(%q): %v, want *ImageError", image, err)
		}
	}
	for _, image := range []string{"wss-sidecar", "registry.example/wss-sidecar:0.1.0", "ghcr.io/a/wss-sidecar@sha256:00", "curlimages/curl", curl} {
		if _, err := ResolveImage(image); err != nil {
			t.Errorf("ResolveImage(%q): %v", image, err)
		}
	}
}

func TestCommandAndArgsFollowKubernetesRules(t *testing.T) {
	img := &Image{Entrypoint: []string{"/ep"}, Cmd: []string{"cmd1", "cmd2"}}
	for _, c := range []struct {
		command, args, want []string
	}{
		{nil, nil, []string{"/ep", "cmd1", "cmd2"}},
		{[]string{"/bin/x"}, nil, []string{"/bin/x"}},
		{[]string{"/bin/x"}, []string{"a"}, []string{"/bin/x", "a"}},
		{nil, []string{"a", "b"}, []string{"/ep", "a", "b"}},
	} {
		if got := commandLine(img, c.command, c.args); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("command %q args %q: %q, want %q", c.command, c.args, got, c.want)
		}
	}
	// In a container: args alone keep the curl image's entrypoint.sh, which runs a named
	// program, or curl for an argument that starts with '-'.
	p := newPod(t)
	s := p.spec("c", curl)
	s.Args = []string{"echo", "from", "args"}
	if code, log := run(t, s); code != 0 || log != "from args\n" {
		t.Fatalf("args only: %d %q", code, log)
	}
	s = p.spec("d", curl)
	s.Args = []string{"--version"}
	if code, log := run(t, s); code != 0 || !strings.HasPrefix(log, "curl ") {
		t.Fatalf("entrypoint.sh with curl flags: %d %q", code, log)
	}
}

func TestCurlContainerSeesItsPodAndOnlyItsImage(t *testing.T) {
	p := newPod(t)
	s := p.spec("c", curl, "sh", "-c", "hostname; id -u; id -g; ls /; cat /proc/net/fib_trie /proc/net/if_inet6; echo \"env:$HOSTNAME:$HOME\"; ls /work")
	code, log := run(t, s)
	lines := strings.Split(log, "\n")
	if len(lines) < 4 || lines[0] != p.name || lines[1] != "100" || lines[2] != "101" {
		t.Fatalf("hostname/uid/gid: %q", log)
	}
	// `ls /` with stdout not a terminal prints one name a line.
	if got := strings.Join(lines[3:16], " "); got != "bin dev entrypoint.sh etc home lib lib64 proc root run sbin tmp usr" || lines[16] != "var" {
		t.Fatalf("ls / is not the minimal root: %q", log)
	}
	v6hex := strings.ReplaceAll(fmt.Sprintf("%x", p.net.IPv6.AsSlice()), ":", "")
	if !strings.Contains(log, p.net.IPv4.String()) || !strings.Contains(log, v6hex) {
		t.Fatalf("container does not see %s / %s on eth0: %q", p.net.IPv4, p.net.IPv6, log)
	}
	if !strings.Contains(log, "env:"+p.name+":/home/curl_user\n") {
		t.Fatalf("HOSTNAME/HOME: %q", log)
	}
	if code == 0 || !strings.Contains(log, "ls: cannot access '/work': No such file or directory") {
		t.Fatalf("container saw /work: %d %q", code, log)
	}
}

func TestSidecarImageRunsTheBinaryAsNonrootWithoutHostFiles(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("WSS_SIDECAR_BIN", self)
	p := newPod(t)
	s := p.spec("wss-sidecar", "registry.example/wss-sidecar:0.1.0")
	s.Env = []string{"WSSCL_PROBE=/,/work,/work/main/target/cluster/kubeconfig,/etc/ssl/certs/ca-certificates.crt,/etc/passwd"}
	code, log := run(t, s)
	for _, want := range []string{
		`args=["proxy"] uid=65532 gid=65532`,
		"hostname=" + p.name,
		"read /work: open /work: no such file or directory",
		"read /work/main/target/cluster/kubeconfig: open /work/main/target/cluster/kubeconfig: no such file or directory",
		"read /etc/ssl/certs/ca-certificates.crt: ok",
		"read /etc/passwd: ok",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
}

func TestRunAsUserAndReadOnlyRoot(t *testing.T) {
	p := newPod(t)
	data, ro := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(ro, "f"), []byte("secret-ish\n"), 0o644)
	os.Chmod(data, 0o777)
	uid := int64(65532)
	s := p.spec("c", curl, "sh", "-c", "id -u; id -g; echo x > /data/ok && echo wrote-data; cat /ro/f; echo x > /ro/g; echo x > /rootfile; echo x > /tmp/t")
	s.UID, s.ReadOnlyRoot = &uid, true
	s.Mounts = []Mount{{Source: data, Target: "/data"}, {Source: ro, Target: "/ro", ReadOnly: true}}
	code, log := run(t, s)
	for _, want := range []string{"65532\n0\n", "wrote-data", "secret-ish", "/ro/g: Read-only file system", "/rootfile: Read-only file system", "/tmp/t: Read-only file system"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if code == 0 {
		t.Errorf("exit 0 after failed writes")
	}
	if _, err := os.Stat(filepath.Join(data, "ok")); err != nil {
		t.Errorf("write to the rw mount did not reach the host: %v", err)
	}
	// Without readOnlyRootFilesystem a root container writes to its own layer only.
	s = p.spec("w", curl, "sh", "-c", "echo x > /rootfile && echo wrote; echo core > /proc/sys/kernel/core_pattern || true")
	root := int64(0)
	s.UID = &root
	if code, log := run(t, s); code != 0 || !strings.HasPrefix(log, "wrote\n") || !strings.Contains(log, "core_pattern: Read-only file system") {
		t.Fatalf("writable root: %d %q", code, log)
	}
}

func TestSignalReachesPID1AndWaitReportsTheExit(t *testing.T) {
	p := newPod(t)
	s := p.spec("trap", curl, "sh", "-c", `trap "exit 42" TERM; echo ready; sleep 1000 & wait`)
	pr := start(t, s)
	awaitLog(t, s, "ready")
	if err := pr.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := pr.Wait(); code != 42 || err != nil {
		t.Fatalf("trap: exit %d %v, want 42", code, err)
	}
	if err := pr.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("Signal after exit: %v", err)
	}

	// A PID 1 without a handler ignores SIGTERM (as in any container without an init);
	// SIGKILL from the host ends it: 128+9.
	s = p.spec("sleep", curl, "sleep", "1000")
	pr = start(t, s)
	pr.Signal(syscall.SIGTERM)
	select {
	case <-pr.Done():
		t.Fatal("PID 1 sleep died of SIGTERM")
	case <-time.After(300 * time.Millisecond):
	}
	pr.Signal(syscall.SIGKILL)
	if code, _ := pr.Wait(); code != 137 {
		t.Fatalf("SIGKILL: exit %d, want 137", code)
	}

	if code, _ := run(t, p.spec("exit", curl, "sh", "-c", "exit 7")); code != 7 {
		t.Fatalf("exit 7: %d", code)
	}
}

func TestMissingProgramIsAStartError(t *testing.T) {
	p := newPod(t)
	_, err := Start(p.spec("c", curl, "/no/such/program"))
	var se *StartError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Start: %v, want *StartError", err)
	}
}

func TestExecRunsInTheContainer(t *testing.T) {
	p := newPod(t)
	uid := int64(65532)
	s := p.spec("c", curl, "sh", "-c", "echo hi > /tmp/mark; echo ready; exec sleep 1000")
	s.UID = &uid
	s.Env = []string{"FOO=bar"}
	start(t, s)
	awaitLog(t, s, "ready")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, out, err := Exec(ctx, s, []string{"sh", "-c", `id -u; hostname; cat /tmp/mark; echo "$FOO"; cat /proc/1/comm; ls /work; echo err >&2; exit 3`})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("65532\n%s\nhi\nbar\n", p.name)
	if code != 3 || !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), "err\n") {
		t.Fatalf("exec: %d %q, want 3 and prefix %q", code, out, want)
	}
	// Its PID namespace (PID 1 is the container's sleep; counting /proc's entries raced with
	// the pipeline's own processes starting) and not the host's /work.
	if !strings.Contains(string(out), "\nsleep\n") || !strings.Contains(string(out), "/work") {
		t.Fatalf("exec not in the container's pid/mount namespaces: %q", out)
	}

	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	began := time.Now()
	_, _, err = Exec(short, s, []string{"sleep", "30"})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 5*time.Second {
		t.Fatalf("exec past its deadline: %v after %v", err, time.Since(began))
	}

	other := s
	other.Container = "absent"
	if _, _, err := Exec(ctx, other, []string{"true"}); !errors.Is(err, errNotRunning) {
		t.Fatalf("exec in absent container: %v", err)
	}
}

// The real binary, dynamically linked in a debug build: its libraries and loader must be in
// the image root. Runs when a build exists (scripts/test builds one before the cluster tests).
func TestSidecarImageRunsTheRealBinary(t *testing.T) {
	bin := os.Getenv("WSS_SIDECAR_BIN")
	if bin == "" {
		for _, c := range []string{"../../../../target/release/wss-sidecar", "../../../../target/debug/wss-sidecar"} {
			if _, err := os.Stat(c); err == nil {
				bin, _ = filepath.Abs(c)
				break
			}
		}
	}
	if bin == "" {
		t.Skip("no wss-sidecar build in target/ and WSS_SIDECAR_BIN unset")
	}
	t.Setenv("WSS_SIDECAR_BIN", bin)
	p := newPod(t)
	s := p.spec("wss-sidecar", "wss-sidecar:0.1.0")
	s.Args = []string{"--version"}
	if code, log := run(t, s); code != 0 || !strings.HasPrefix(log, "wss-sidecar ") {
		t.Fatalf("%s --version in its image: %d %q", bin, code, log)
	}
}

// As the chart's helm test runs it: curl image, runAsUser 65532, read-only root, reaching a
// server on the node address from the pod's network namespace.
func TestCurlReachesTheNodeFromThePodNetwork(t *testing.T) {
	ln, err := net.Listen("tcp", "10.244.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "seen "+r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	p := newPod(t)
	s := p.spec("check", curl)
	uid := int64(65532)
	s.UID, s.ReadOnlyRoot = &uid, true
	s.Args = []string{"-fsS", "--max-time", "10", "http://" + ln.Addr().String() + "/"}
	code, log := run(t, s)
	if code != 0 || !strings.HasPrefix(log, "seen "+p.net.IPv4.String()+":") {
		t.Fatalf("curl: %d %q", code, log)
	}
}

func TestHostNetworkContainerSharesTheNodesNetworkAndHostname(t *testing.T) {
	p := newPod(t)
	s := p.spec("c", curl, "sh", "-c", "hostname; ls -l /proc/self/ns/net; cat /proc/net/fib_trie; echo \"env:$HOSTNAME\"")
	s.Netns, s.HostNetwork = "", true
	code, log := run(t, s)
	node, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	netns, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(log, "\n")
	if code != 0 || len(lines) < 3 || lines[0] != node || !strings.HasSuffix(lines[1], "-> "+netns) {
		t.Fatalf("want hostname %q and netns %q (the node's): %d %q", node, netns, code, log)
	}
	if !strings.Contains(log, "10.244.0.1") || !strings.Contains(log, "env:"+node+"\n") {
		t.Fatalf("container does not see the node's address 10.244.0.1 or HOSTNAME: %q", log)
	}
}
