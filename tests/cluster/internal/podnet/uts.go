package podnet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// The pod's UTS namespace. A pod has one hostname shared by its containers (the pause
// container holds it in a CRI runtime); here a bind-mounted namespace file keeps it alive
// between containers and across container restarts, removed by Teardown with the netns.
const utsDir = stateDir + "/uts"

// UTSPath is the pod's UTS namespace file.
func UTSPath(uid string) (string, error) {
	if _, err := shortID(uid); err != nil {
		return "", err
	}
	return filepath.Join(utsDir, strings.ToLower(uid)), nil
}

// EnsureUTS returns the pod's UTS namespace file, creating the namespace with this hostname
// on first use. A later call with another hostname keeps the first one (the pod name does
// not change for a uid).
func EnsureUTS(uid, hostname string) (string, error) {
	path, err := UTSPath(uid)
	if err != nil {
		return "", err
	}
	if hostname == "" || len(hostname) > 64 {
		return "", fmt.Errorf("podnet: hostname %q: want 1..64 bytes", hostname)
	}
	unlock, err := lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	if isNsfs(path) {
		return path, nil
	}
	if err := os.MkdirAll(utsDir, 0o755); err != nil {
		return "", fmt.Errorf("podnet: %w", err)
	}
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		return "", fmt.Errorf("podnet: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		// The thread that unshares its UTS namespace is never unlocked: when this
		// goroutine ends the Go runtime discards the thread instead of reusing it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			errc <- fmt.Errorf("unshare uts: %w", err)
			return
		}
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			errc <- fmt.Errorf("sethostname %q: %w", hostname, err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/uts", unix.Gettid())
		if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind %s: %w", src, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return "", fmt.Errorf("podnet: uts namespace of pod %s: %w", uid, err)
	}
	return path, nil
}

func isNsfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// removeUTS unmounts and removes one pod's UTS namespace file (the namespace ends with its
// last process).
func removeUTS(uid string) error {
	path, err := UTSPath(uid)
	if err != nil {
		return err
	}
	return removeNsFile(path)
}

func removeAllUTS() error {
	ents, err := os.ReadDir(utsDir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("podnet: %w", err)
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, removeNsFile(filepath.Join(utsDir, e.Name())))
	}
	return errors.Join(errs...)
}

func removeNsFile(path string) error {
	for isNsfs(path) {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("podnet: unmount %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("podnet: %w", err)
	}
	return nil
}
