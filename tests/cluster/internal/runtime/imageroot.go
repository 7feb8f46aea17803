package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// An image's root is prepared once under DIR/images/<name>/<hash>/, where hash covers every
// file's source (path, size, mtime) or content: a rebuilt binary with other libraries, or a
// changed host program, gives a new root; an unchanged one reuses the old. Containers use it
// as the read-only lower layer of their overlay.

const hostCABundle = "/etc/ssl/certs/ca-certificates.crt"

// file is one file of an image root: copied from host, or written from data, or (neither)
// an empty placeholder to bind over.
type file struct {
	path string // relative to the root
	host string
	data []byte
	mode os.FileMode
}

var prepareMu sync.Mutex

// prepare returns the image's root directory and the binds every container of it gets.
func (img *Image) prepare(dir string) (string, []Mount, error) {
	files, binds, err := img.files()
	if err != nil {
		return "", nil, &ImageError{Image: img.Name, Reason: err.Error()}
	}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%s\x00%o\x00", f.path, f.host, f.mode)
		h.Write(f.data)
		if f.host != "" {
			st, err := os.Stat(f.host)
			if err != nil {
				return "", nil, &ImageError{Image: img.Name, Reason: err.Error()}
			}
			fmt.Fprintf(h, "%d\x00%d\x00", st.Size(), st.ModTime().UnixNano())
		}
	}
	for _, u := range img.users {
		fmt.Fprintf(h, "%+v", u)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	base := filepath.Join(dir, "images", img.Name)
	root := filepath.Join(base, sum)

	prepareMu.Lock()
	defer prepareMu.Unlock()
	if _, err := os.Stat(root); err == nil {
		return root, binds, nil
	}
	tmp := filepath.Join(base, fmt.Sprintf(".tmp-%s-%d", sum, os.Getpid()))
	os.RemoveAll(tmp)
	if err := img.build(tmp, files); err != nil {
		os.RemoveAll(tmp)
		return "", nil, fmt.Errorf("runtime: prepare image %s: %w", img.Name, err)
	}
	if err := os.Rename(tmp, root); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(root); serr != nil {
			return "", nil, fmt.Errorf("runtime: prepare image %s: %w", img.Name, err)
		}
	}
	return root, binds, nil
}

// build lays out a root: the merged-/usr skeleton, /etc/passwd and /etc/group, /tmp, the
// users' homes, then the files.
func (img *Image) build(root string, files []file) error {
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/local/bin", "etc", "proc", "dev", "root", "var", "run"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if err := os.Symlink("usr/"+l, filepath.Join(root, l)); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return err
	}
	var passwd, group strings.Builder
	for _, u := range img.users {
		fmt.Fprintf(&passwd, "%s:x:%d:%d:%s:%s:/sbin/nologin\n", u.name, u.uid, u.gid, u.name, u.home)
		fmt.Fprintf(&group, "%s:x:%d:\n", u.group, u.gid)
		if u.uid != 0 {
			home := filepath.Join(root, u.home)
			if u.home != "/nonexistent" {
				if err := os.MkdirAll(home, 0o755); err != nil {
					return err
				}
				if err := os.Chown(home, int(u.uid), int(u.gid)); err != nil {
					return err
				}
			}
		}
	}
	files = append(files,
		file{path: "etc/passwd", data: []byte(passwd.String()), mode: 0o644},
		file{path: "etc/group", data: []byte(group.String()), mode: 0o644})
	for _, f := range files {
		dst := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		data := f.data
		if f.host != "" {
			b, err := os.ReadFile(f.host)
			if err != nil {
				return err
			}
			data = b
		}
		if err := os.WriteFile(dst, data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(dst, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// lddLine matches "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
// "/lib64/ld-linux-x86-64.so.2 (0x...)".
var lddLine = regexp.MustCompile(`^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)`)

var lddCache sync.Map // "path\x00size\x00mtime" -> []file

// sharedLibraries lists the libraries and loader a dynamically linked program needs (none
// for a static one), each to be copied at the path ldd reports.
func sharedLibraries(bin string) ([]file, error) {
	st, err := os.Stat(bin)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%s\x00%d\x00%d", bin, st.Size(), st.ModTime().UnixNano())
	if v, ok := lddCache.Load(key); ok {
		return v.([]file), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ldd", bin)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	text := out.String()
	if err != nil {
		if strings.Contains(text, "not a dynamic executable") || strings.Contains(text, "statically linked") {
			lddCache.Store(key, []file(nil))
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, strings.TrimSpace(text))
	}
	var libs []file
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "=> not found") {
			return nil, fmt.Errorf("ldd %s: %s", bin, strings.TrimSpace(line))
		}
		if m := lddLine.FindStringSubmatch(line); m != nil {
			real, err := filepath.EvalSymlinks(m[1])
			if err != nil {
				return nil, err
			}
			libs = append(libs, file{path: strings.TrimPrefix(m[1], "/"), host: real, mode: 0o755})
		}
	}
	sort.Slice(libs, func(i, j int) bool { return libs[i].path < libs[j].path })
	lddCache.Store(key, libs)
	return libs, nil
}

// lookHostPath finds a host program, resolving symlinks (/bin/sh -> dash).
func lookHostPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("host program %s for the image: %w", name, err)
	}
	return filepath.EvalSymlinks(p)
}
