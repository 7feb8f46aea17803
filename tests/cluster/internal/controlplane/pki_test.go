package controlplane

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"slices"
	"testing"
)

func readCert(t *testing.T, p pki, name string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(p.path(name + ".crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPKINamesAndReuse(t *testing.T) {
	p := pki{dir: t.TempDir() + "/pki"}
	if err := p.ensure(); err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, p, "ca")
	api := readCert(t, p, "apiserver")
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, name := range []string{"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", "10.96.0.1", "10.244.0.1", "127.0.0.1"} {
		if _, err := api.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("apiserver certificate does not serve %s: %v", name, err)
		}
	}
	node := readCert(t, p, "kubelet-client")
	if node.Subject.CommonName != "system:node:wss-node" || !slices.Equal(node.Subject.Organization, []string{"system:nodes"}) {
		t.Errorf("kubelet client subject = %v", node.Subject)
	}
	if _, err := node.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("kubelet client certificate: %v", err)
	}
	admin := readCert(t, p, "admin")
	if !slices.Equal(admin.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("admin organization = %v", admin.Subject.Organization)
	}
	if err := p.ensure(); err != nil {
		t.Fatal(err)
	}
	if again := readCert(t, p, "ca"); !again.Equal(ca) {
		t.Error("a complete PKI was not reused")
	}
	os.Remove(p.path("sa.pub"))
	if err := p.ensure(); err != nil {
		t.Fatal(err)
	}
	if again := readCert(t, p, "ca"); again.Equal(ca) {
		t.Error("an incomplete PKI was reused")
	}
}

func TestMultiListenerAcceptsOnEveryAddress(t *testing.T) {
	ml, err := listenAll("127.0.0.1:0", "127.0.0.2:0")
	if err != nil {
		t.Skipf("second loopback address unavailable: %v", err)
	}
	for _, l := range ml.ls {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, err := ml.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if a.LocalAddr().String() != l.Addr().String() {
			t.Errorf("accepted on %s, dialled %s", a.LocalAddr(), l.Addr())
		}
		a.Close()
		c.Close()
	}
	ml.Close()
	if _, err := ml.Accept(); err == nil {
		t.Error("Accept after Close succeeded")
	}
}
