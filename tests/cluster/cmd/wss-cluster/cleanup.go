package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/network"
	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/podnet"
)

// cleanupMain removes what a crashed run may have left: pod network namespaces and veths,
// the bridge, the service device and routes, mounts under DIR, DIR/ready. Idempotent.
func cleanupMain(args []string) error {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of the cluster's state (required)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *dir == "" {
		return fmt.Errorf("%w: --dir is required", errUsage)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	var errs []error
	if err := unmountUnder(abs); err != nil {
		errs = append(errs, err)
	}
	if err := podnet.CleanupAll(); err != nil {
		errs = append(errs, fmt.Errorf("pod networks: %w", err))
	}
	if err := network.Cleanup(); err != nil {
		errs = append(errs, fmt.Errorf("network: %w", err))
	}
	if err := os.Remove(filepath.Join(abs, "ready")); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount point at or below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
