package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// ImageError says the image is not in the table: the kubelet reports ErrImagePull, then
// ImagePullBackOff, as for an image no registry has.
type ImageError struct {
	Image  string
	Reason string
}

func (e *ImageError) Error() string {
	return fmt.Sprintf("image %q: %s", e.Image, e.Reason)
}

// Image is one entry of the image table: the config an OCI image carries (entrypoint, cmd,
// env, user, workdir) plus how to lay out its file system from host files.
type Image struct {
	// Name names the prepared root under DIR/images/.
	Name            string
	Entrypoint, Cmd []string
	Env             []string
	WorkingDir      string
	UID, GID        int64
	users           []user
	files           func() ([]file, []Mount, error)
}

// user is one /etc/passwd line (and its primary group's /etc/group line).
type user struct {
	name, group string
	uid, gid    int64
	home        string
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var (
	repoMu   sync.Mutex
	repoRoot string
)

// SetRepoRoot tells the runtime where the wss-sidecar checkout is, for the default binary
// <root>/target/release/wss-sidecar of the wss-sidecar image (WSS_SIDECAR_BIN overrides).
func SetRepoRoot(dir string) {
	repoMu.Lock()
	repoRoot = dir
	repoMu.Unlock()
}

// sidecarBinary is the host binary the wss-sidecar image runs.
func sidecarBinary() (string, error) {
	if p := os.Getenv("WSS_SIDECAR_BIN"); p != "" {
		return p, nil
	}
	repoMu.Lock()
	root := repoRoot
	repoMu.Unlock()
	if root == "" {
		return "", fmt.Errorf("neither WSS_SIDECAR_BIN nor the repository root (runtime.SetRepoRoot) is set")
	}
	return filepath.Join(root, "target", "release", "wss-sidecar"), nil
}

// repository strips tag and digest from an image reference, and docker.io's implicit
// prefixes: "docker.io/curlimages/curl:8.11.1" -> "curlimages/curl".
func repository(image string) string {
	ref, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	for _, p := range []string{"docker.io/", "index.docker.io/", "registry-1.docker.io/"} {
		ref = strings.TrimPrefix(ref, p)
	}
	return strings.TrimPrefix(ref, "library/")
}

// ResolveImage maps an image reference to its table entry. The table:
//   - repository "wss-sidecar" or ending in "/wss-sidecar" (any registry, tag): the locally
//     built binary, laid out as /work/main/Dockerfile's image (distroless/static:nonroot);
//   - "curlimages/curl" (any tag): host sh, curl, grep and a few coreutils, for helm test;
//   - anything else: *ImageError.
func ResolveImage(image string) (*Image, error) {
	repo := repository(image)
	switch {
	case image == "":
		return nil, &ImageError{Image: image, Reason: "empty image name"}
	case repo == "wss-sidecar" || strings.HasSuffix(repo, "/wss-sidecar"):
		return sidecarImage(), nil
	case repo == "curlimages/curl":
		return curlImage(), nil
	}
	return nil, &ImageError{Image: image, Reason: "not in the wss-cluster image table (wss-sidecar, curlimages/curl)"}
}

// sidecarImage mirrors Dockerfile: FROM distroless/static-debian12:nonroot, the binary at
// /usr/local/bin/wss-sidecar, USER 65532:65532, ENTRYPOINT [wss-sidecar], CMD [proxy].
func sidecarImage() *Image {
	return &Image{
		Name:       "wss-sidecar",
		Entrypoint: []string{"/usr/local/bin/wss-sidecar"},
		Cmd:        []string{"proxy"},
		Env:        []string{"PATH=" + defaultPath, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		WorkingDir: "/",
		UID:        65532, GID: 65532,
		users: []user{
			{name: "root", group: "root", uid: 0, gid: 0, home: "/root"},
			{name: "nobody", group: "nogroup", uid: 65534, gid: 65534, home: "/nonexistent"},
			{name: "nonroot", group: "nonroot", uid: 65532, gid: 65532, home: "/home/nonroot"},
		},
		files: func() ([]file, []Mount, error) {
			bin, err := sidecarBinary()
			if err != nil {
				return nil, nil, err
			}
			st, err := os.Stat(bin)
			if err != nil {
				return nil, nil, fmt.Errorf("wss-sidecar binary: %w (build it: cargo build --release, or set WSS_SIDECAR_BIN)", err)
			}
			if !st.Mode().IsRegular() {
				return nil, nil, fmt.Errorf("wss-sidecar binary %s is not a regular file", bin)
			}
			libs, err := sharedLibraries(bin)
			if err != nil {
				return nil, nil, err
			}
			fs := []file{
				{path: "etc/ssl/certs/ca-certificates.crt", host: hostCABundle, mode: 0o644},
				// The binary changes with every build: bind it at container start instead of
				// copying 15-230 MB into each prepared root.
				{path: "usr/local/bin/wss-sidecar", mode: 0o755},
			}
			fs = append(fs, libs...)
			return fs, []Mount{{Source: bin, Target: "/usr/local/bin/wss-sidecar", ReadOnly: true}}, nil
		},
	}
}

// curlEntrypoint is curlimages/curl's /entrypoint.sh: run curl unless the first argument
// names another program.
const curlEntrypoint = `#!/bin/sh
set -e
if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ]; then
  set -- curl "$@"
fi
exec "$@"
`

// curlTools are the host programs in the curl image's root, at /usr/bin (and /bin).
var curlTools = []string{"sh", "curl", "grep", "cat", "ls", "sleep", "echo", "env", "id", "test", "hostname"}

// curlImage models curlimages/curl: ENTRYPOINT ["/entrypoint.sh"], CMD ["curl"], USER
// curl_user (100:101), on a minimal root of host programs.
func curlImage() *Image {
	return &Image{
		Name:       "curl",
		Entrypoint: []string{"/entrypoint.sh"},
		Cmd:        []string{"curl"},
		Env:        []string{"PATH=" + defaultPath},
		WorkingDir: "/",
		UID:        100, GID: 101,
		users: []user{
			{name: "root", group: "root", uid: 0, gid: 0, home: "/root"},
			{name: "curl_user", group: "curl_group", uid: 100, gid: 101, home: "/home/curl_user"},
		},
		files: func() ([]file, []Mount, error) {
			fs := []file{
				{path: "entrypoint.sh", data: []byte(curlEntrypoint), mode: 0o755},
				{path: "etc/ssl/certs/ca-certificates.crt", host: hostCABundle, mode: 0o644},
				{path: "etc/nsswitch.conf", data: []byte("hosts: files dns\n"), mode: 0o644},
			}
			seen := map[string]bool{}
			for _, t := range curlTools {
				host, err := lookHostPath(t)
				if err != nil {
					return nil, nil, err
				}
				fs = append(fs, file{path: "usr/bin/" + t, host: host, mode: 0o755})
				libs, err := sharedLibraries(host)
				if err != nil {
					return nil, nil, err
				}
				for _, l := range libs {
					if !seen[l.path] {
						seen[l.path] = true
						fs = append(fs, l)
					}
				}
			}
			return fs, nil, nil
		},
	}
}

// lookupGID returns the gid of uid in the image's /etc/passwd, as containerd's WithUserID
// does for a numeric runAsUser without runAsGroup (0 when the uid has no entry).
func (img *Image) lookupGID(uid int64) int64 {
	for _, u := range img.users {
		if u.uid == uid {
			return u.gid
		}
	}
	return 0
}

// home is the uid's home directory in the image's /etc/passwd, "/" when it has no entry.
func (img *Image) home(uid int64) string {
	for _, u := range img.users {
		if u.uid == uid {
			return u.home
		}
	}
	return "/"
}
