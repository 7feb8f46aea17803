package controlplane

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// serverURL is what every host-side client dials: loopback, so it works whatever the bridge does.
var serverURL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ranges.APIServerPort))

// writeKubeconfig writes a self-contained kubeconfig (certificates embedded) for the client
// certificate stem user, mode 0600: it holds a private key.
func (p pki) writeKubeconfig(path, user string) error {
	ca, err := p.readPEM("ca.crt")
	if err != nil {
		return err
	}
	crt, err := p.readPEM(user + ".crt")
	if err != nil {
		return err
	}
	key, err := p.readPEM(user + ".key")
	if err != nil {
		return err
	}
	const name = "wss-cluster"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: serverURL, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = name
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
