package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// certValidity is long enough that a kept DIR/pki never expires during the life of a checkout.
const certValidity = 10 * 365 * 24 * time.Hour

// pki names the files of DIR/pki. The layout follows kubeadm's (cmd/kubeadm/app/constants).
type pki struct{ dir string }

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

// leaf is one certificate signed by a CA of the cluster.
type leaf struct {
	name   string // file stem: name.crt, name.key
	ca     string // stem of the signing CA
	cn     string
	orgs   []string
	server bool
	dns    []string
	ips    []string
}

// leaves are the certificates the components present. The apiserver's serving names are the
// ones pods and the host dial: the `kubernetes` ClusterIP, the bridge, loopback and the
// Service's DNS names (cmd/kubeadm/app/util/pkiutil/pki_helpers.go GetAPIServerAltNames).
func leaves() []leaf {
	return []leaf{
		{name: "apiserver", ca: "ca", cn: "kube-apiserver", server: true,
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc." + ranges.ClusterDomain, "localhost"},
			ips: []string{ranges.KubernetesServiceIP, ranges.NodeIPv4, "127.0.0.1"}},
		{name: "apiserver-kubelet-client", ca: "ca", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{name: "front-proxy-client", ca: "front-proxy-ca", cn: "front-proxy-client"},
		{name: "admin", ca: "ca", cn: "kubernetes-admin", orgs: []string{"system:masters"}},
		{name: "kubelet-client", ca: "ca", cn: "system:node:" + ranges.NodeName, orgs: []string{"system:nodes"}},
		{name: "kubelet", ca: "ca", cn: ranges.NodeName, server: true,
			dns: []string{ranges.NodeName, "localhost"}, ips: []string{ranges.NodeIPv4, ranges.NodeIPv6, "127.0.0.1"}},
		{name: "controller-manager", ca: "ca", cn: "system:kube-controller-manager"},
		{name: "scheduler", ca: "ca", cn: "system:kube-scheduler"},
	}
}

// ensure reuses DIR/pki when every file is there, else makes all of it anew (a partial PKI
// cannot be trusted to chain to the CA on disk).
func (p pki) ensure() error {
	files := []string{"ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub"}
	for _, l := range leaves() {
		files = append(files, l.name+".crt", l.name+".key")
	}
	complete := true
	for _, f := range files {
		if _, err := os.Stat(p.path(f)); err != nil {
			complete = false
			break
		}
	}
	if complete {
		return nil
	}
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("remove incomplete pki %s: %w", p.dir, err)
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	cas := map[string]*authority{}
	for _, name := range []string{"ca", "front-proxy-ca"} {
		ca, err := p.newCA(name)
		if err != nil {
			return err
		}
		cas[name] = ca
	}
	for _, l := range leaves() {
		if err := p.newLeaf(cas[l.ca], l); err != nil {
			return err
		}
	}
	return p.newServiceAccountKey()
}

type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func (p pki) newCA(name string) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl, err := template(pkix.Name{CommonName: "wss-cluster-" + name})
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := p.write(name, der, key); err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key}, nil
}

func (p pki) newLeaf(ca *authority, l leaf) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl, err := template(pkix.Name{CommonName: l.cn, Organization: l.orgs})
	if err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if l.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl.DNSNames = l.dns
	for _, ip := range l.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return fmt.Errorf("sign %s: %w", l.name, err)
	}
	return p.write(l.name, der, key)
}

// newServiceAccountKey makes the key pair the apiserver signs ServiceAccount tokens with and
// the token controller uses (kubeadm: sa.key, sa.pub).
func (p pki) newServiceAccountKey() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	priv, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.path("sa.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(p.path("sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

func (p pki) write(name string, der []byte, key *ecdsa.PrivateKey) error {
	priv, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.path(name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(p.path(name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func template(subject pkix.Name) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               subject,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		BasicConstraintsValid: true,
	}, nil
}

// readPEM reads a file of the PKI for embedding in a kubeconfig.
func (p pki) readPEM(name string) ([]byte, error) {
	b, err := os.ReadFile(p.path(name))
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, errors.New("empty " + p.path(name))
	}
	return b, nil
}
