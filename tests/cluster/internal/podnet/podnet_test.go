package podnet

import (
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("podnet tests need root (netns, veth)")
		os.Exit(0)
	}
	remove, err := TestBridge()
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

func newUID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func setup(t *testing.T) (string, *Pod) {
	t.Helper()
	uid := newUID(t)
	p, err := Setup(uid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Teardown(uid) })
	return uid, p
}

// curlFrom fetches url from inside the netns.
func curlFrom(t *testing.T, ns, url string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "5", url).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s from %s: %v: %s", url, ns, err, out)
	}
	return string(out)
}

func TestSetupCreatesReachableDualStackPod(t *testing.T) {
	uid, p := setup(t)
	id, _ := shortID(uid)
	if p.Name != "wsscl-"+id || p.Netns != "/run/netns/wsscl-"+id {
		t.Fatalf("names: %+v", p)
	}
	b := p.IPv4.As4()
	if b[0] != 10 || b[1] != 244 || b[2] != 0 || b[3] < 2 || b[3] == 255 {
		t.Fatalf("IPv4 %s not in 10.244.0.2-254", p.IPv4)
	}
	if want := fmt.Sprintf("fd10:244::%d", b[3]); p.IPv6.String() != want {
		t.Fatalf("IPv6 %s, want %s", p.IPv6, want)
	}
	master, err := os.Readlink("/sys/class/net/wsv" + id + "/master")
	if err != nil || !strings.HasSuffix(master, "/wsscl0") {
		t.Fatalf("wsv%s master: %q %v", id, master, err)
	}
	routes, err := ip("-n", p.Name, "route", "show", "default")
	if err != nil || !strings.Contains(string(routes), "via 10.244.0.1 dev eth0") {
		t.Fatalf("IPv4 default route: %s %v", routes, err)
	}
	routes, err = ip("-n", p.Name, "-6", "route", "show", "default")
	if err != nil || !strings.Contains(string(routes), "via fd10:244::1 dev eth0") {
		t.Fatalf("IPv6 default route: %s %v", routes, err)
	}
	lo, err := ip("-n", p.Name, "link", "show", "lo")
	if err != nil || !strings.Contains(string(lo), "UP") {
		t.Fatalf("lo: %s %v", lo, err)
	}

	// The pod reaches the node over both families, and the node sees the pod's address.
	for _, host := range []string{"10.244.0.1", "[fd10:244::1]"} {
		ln, err := net.Listen("tcp", host+":0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.RemoteAddr)
		})}
		go srv.Serve(ln)
		port := ln.Addr().(*net.TCPAddr).Port
		got := curlFrom(t, p.Name, fmt.Sprintf("http://%s:%d/", host, port))
		srv.Close()
		want := p.IPv4.String()
		if strings.HasPrefix(host, "[") {
			want = "[" + p.IPv6.String() + "]"
		}
		if !strings.HasPrefix(got, want+":") {
			t.Fatalf("node saw %q, want pod address %s", got, want)
		}
	}

	again, err := Setup(uid)
	if err != nil || *again != *p {
		t.Fatalf("second Setup: %+v %v, want %+v", again, err, p)
	}
}

func TestTeardownRemovesNetnsAndVeth(t *testing.T) {
	uid, p := setup(t)
	id, _ := shortID(uid)
	if err := Teardown(uid); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.Netns); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", p.Netns, err)
	}
	if linkExists("wsv" + id) {
		t.Fatalf("wsv%s still there", id)
	}
	if err := Teardown(uid); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
}

func TestAllocationIsDistinctAndReadFromTheKernel(t *testing.T) {
	uidA, a := setup(t)
	_, b := setup(t)
	if a.IPv4 == b.IPv4 || a.IPv6 == b.IPv6 {
		t.Fatalf("same addresses: %+v %+v", a, b)
	}
	// A restarted process knows nothing but the kernel state: forget the hint and the pods'
	// addresses still count as used.
	used, err := usedHosts()
	if err != nil {
		t.Fatal(err)
	}
	if !used[int(a.IPv4.As4()[3])] || !used[int(b.IPv4.As4()[3])] {
		t.Fatalf("used %v misses %s or %s", used, a.IPv4, b.IPv4)
	}
	// A freed address is not handed out again at once (round robin).
	if err := Teardown(uidA); err != nil {
		t.Fatal(err)
	}
	_, c := setup(t)
	if c.IPv4 == a.IPv4 || c.IPv4 == b.IPv4 {
		t.Fatalf("new pod got %s; a had %s, b has %s", c.IPv4, a.IPv4, b.IPv4)
	}
}

func TestSetupRepairsAHalfMadePod(t *testing.T) {
	uid := newUID(t)
	id, _ := shortID(uid)
	if _, err := ip("netns", "add", netnsName(id)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Teardown(uid) })
	p, err := Setup(uid)
	if err != nil {
		t.Fatal(err)
	}
	if !p.IPv4.IsValid() || !linkExists("wsv"+id) {
		t.Fatalf("not repaired: %+v", p)
	}
}

func TestEnsureUTSHoldsTheHostnameUntilTeardown(t *testing.T) {
	uid, _ := setup(t)
	path, err := EnsureUTS(uid, "my-pod")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := EnsureUTS(uid, "my-pod"); err != nil || again != path {
		t.Fatalf("second EnsureUTS: %q %v", again, err)
	}
	out, err := exec.Command("nsenter", "--uts="+path, "hostname").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "my-pod" {
		t.Fatalf("hostname in %s: %q %v", path, out, err)
	}
	if err := Teardown(uid); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", path, err)
	}
}

func TestBadUIDIsRefused(t *testing.T) {
	for _, uid := range []string{"", "abc", "zzzzzzzz-zzzz-zzzz"} {
		if _, err := Setup(uid); err == nil || !strings.Contains(err.Error(), "pod uid") {
			t.Errorf("Setup(%q): %v", uid, err)
		}
	}
}

func TestCleanupAllRemovesEveryPod(t *testing.T) {
	names, err := podNetnsNames()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) > 0 {
		t.Skipf("other pod networks exist (a running cluster?): %v; CleanupAll would remove them", names)
	}
	_, a := setup(t)
	uidB, _ := setup(t)
	if _, err := EnsureUTS(uidB, "b"); err != nil {
		t.Fatal(err)
	}
	if err := CleanupAll(); err != nil {
		t.Fatal(err)
	}
	names, _ = podNetnsNames()
	links, _ := hostLinks("wsv")
	uts, _ := os.ReadDir(utsDir)
	if len(names) != 0 || len(links) != 0 || len(uts) != 0 {
		t.Fatalf("left: netns %v links %v uts %d (a was %s)", names, links, len(uts), a.Name)
	}
}
