package podnet

import (
	"fmt"
	"strings"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

const (
	// netnsDir is where `ip netns add` keeps its bind-mounted namespace files.
	netnsDir = "/run/netns"
	// stateDir holds the podnet lock, the round-robin allocation hint and the UTS namespaces.
	stateDir = "/run/wss-cluster"
	// idLen is how many hex digits of the pod uid name its netns and veth (15-byte
	// interface names: "wsv" + 12).
	idLen = 12
)

// shortID returns the first 12 hex digits of uid without dashes, or an error naming uid.
func shortID(uid string) (string, error) {
	hex := strings.ToLower(strings.ReplaceAll(uid, "-", ""))
	if len(hex) < idLen {
		return "", fmt.Errorf("podnet: pod uid %q: want at least %d hex digits", uid, idLen)
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("podnet: pod uid %q: not hex and dashes", uid)
		}
	}
	return hex[:idLen], nil
}

// NetnsName is the network namespace name of the pod whose short id is id.
func netnsName(id string) string { return ranges.NetnsPrefix + id }

// vethName is the host side of the pod's veth; peerName its pod side before it becomes eth0.
func vethName(id string) string { return ranges.VethPrefix + id }
func peerName(id string) string { return "wsp" + id }

// NetnsPath is the path of the pod's network namespace file for a pod uid.
func NetnsPath(uid string) (string, error) {
	id, err := shortID(uid)
	if err != nil {
		return "", err
	}
	return netnsDir + "/" + netnsName(id), nil
}
