package podnet

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// TestBridge makes the bridge that network.Setup normally makes, for tests of podnet and of
// its users that run without the network package. Test binaries running at once share it
// through a shared flock; the one that created it removes it when the others are done. A
// bridge that existed before (a running cluster's) is left alone.
func TestBridge() (remove func() error, err error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(stateDir+"/testbridge.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("podnet: flock: %w", err)
	}
	created := false
	if !linkExists(ranges.Bridge) {
		created = true
		steps := [][]string{
			{"link", "add", ranges.Bridge, "type", "bridge"},
			{"addr", "add", ranges.NodeIPv4 + "/24", "dev", ranges.Bridge},
			{"-6", "addr", "add", ranges.NodeIPv6 + "/64", "dev", ranges.Bridge, "nodad"},
			{"link", "set", ranges.Bridge, "up"},
		}
		for _, s := range steps {
			if _, err := ip(s...); err != nil {
				deleteLink(ranges.Bridge)
				f.Close()
				return nil, err
			}
		}
	}
	if err := unix.Flock(fd, unix.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("podnet: flock: %w", err)
	}
	return func() error {
		defer f.Close()
		if !created {
			return nil
		}
		if err := unix.Flock(fd, unix.LOCK_EX); err != nil { // wait for the other users
			return fmt.Errorf("podnet: flock: %w", err)
		}
		return deleteLink(ranges.Bridge)
	}, nil
}
