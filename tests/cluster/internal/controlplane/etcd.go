package controlplane

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// etcdReadyTimeout bounds how long a fresh single-member etcd may take to elect itself.
const etcdReadyTimeout = 30 * time.Second

// startEtcd starts a fresh single-member etcd in dir/etcd on free loopback ports and returns
// it with its client URL. The data is wiped first: every start is a new cluster, so tests see
// the same empty state each time (the PKI is what is kept).
func startEtcd(dir string) (*embed.Etcd, string, error) {
	data := filepath.Join(dir, "etcd")
	if err := os.RemoveAll(data); err != nil {
		return nil, "", fmt.Errorf("wipe %s: %w", data, err)
	}
	clientURL, err := freeLoopbackURL()
	if err != nil {
		return nil, "", err
	}
	peerURL, err := freeLoopbackURL()
	if err != nil {
		return nil, "", err
	}
	cfg := embed.NewConfig()
	cfg.Name = "wss-cluster"
	cfg.Dir = data
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	// The data is thrown away at the next start anyway; fsync only costs start-up and test time.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", fmt.Errorf("etcd: %w", err)
	case <-time.After(etcdReadyTimeout):
		e.Close()
		return nil, "", fmt.Errorf("etcd not ready after %s (see %s)", etcdReadyTimeout, cfg.LogOutputs[0])
	}
	return e, clientURL.String(), nil
}

// freeLoopbackURL asks the kernel for a free port on 127.0.0.1. The port is released before
// etcd binds it; nothing else on this machine races for loopback ports in practice.
func freeLoopbackURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("find a free loopback port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return &url.URL{Scheme: "http", Host: addr}, nil
}
