// Package volumes lays out a pod's volumes as the kubelet does and keeps them fresh.
//
// Secret, configMap, downwardAPI and projected volumes are written with the kubelet's own
// atomic writer (k8s.io/kubernetes/pkg/volume/util.AtomicWriter), so containers see the
// `..data` symlink swap of a real kubelet; emptyDir is a plain directory. Sync rewrites every
// volume from the API; the kubelet calls it every VolumeRefreshPeriod (the kubelet's
// syncFrequency, 60 s by default: pkg/kubelet/apis/config/v1beta1/defaults.go).
package volumes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	volumeutil "k8s.io/kubernetes/pkg/volume/util"
)

// apiTimeout bounds every API call the volume code makes.
const apiTimeout = 10 * time.Second

// Config is what a Manager needs.
type Config struct {
	// Dir is the cluster directory; volumes live in Dir/kubelet/pods/<uid>/volumes/<name>.
	Dir    string
	Client kubernetes.Interface
	// NodeAllocatable answers downwardAPI resourceFieldRefs without limits.
	NodeAllocatable v1.ResourceList
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Pod holds the volumes of one pod.
type Pod struct {
	cfg    Config
	pod    *v1.Pod
	mu     sync.Mutex
	tokens map[string]*tokenEntry
}

// New prepares (but does not write) the volumes of pod.
func New(cfg Config, pod *v1.Pod) (*Pod, error) {
	if cfg.Dir == "" || cfg.Client == nil {
		return nil, fmt.Errorf("volumes: Config needs Dir and Client")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Pod{cfg: cfg, pod: pod.DeepCopy(), tokens: map[string]*tokenEntry{}}, nil
}

// PodDir is Dir/kubelet/pods/<uid>.
func PodDir(dir, uid string) string { return filepath.Join(dir, "kubelet", "pods", uid) }

// Path is the host directory of the named volume.
func (p *Pod) Path(name string) string {
	return filepath.Join(PodDir(p.cfg.Dir, string(p.pod.UID)), "volumes", name)
}

// UpdatePod replaces the pod object used for downwardAPI fields (labels, annotations change).
func (p *Pod) UpdatePod(pod *v1.Pod) {
	p.mu.Lock()
	p.pod = pod.DeepCopy()
	p.mu.Unlock()
}

// Sync creates every volume directory and (re)writes every API-backed volume. An error names
// the volume; the other volumes are still written.
func (p *Pod) Sync(ctx context.Context) error {
	p.mu.Lock()
	pod := p.pod
	p.mu.Unlock()
	var errs []error
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		if err := p.syncOne(ctx, pod, vol); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", vol.Name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%v", errs)
	}
	return nil
}

func (p *Pod) syncOne(ctx context.Context, pod *v1.Pod, vol *v1.Volume) error {
	dir := p.Path(vol.Name)
	src := vol.VolumeSource
	switch {
	case src.EmptyDir != nil:
		// pkg/volume/emptydir/empty_dir.go: the directory is 0777 so any user can write.
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		return os.Chmod(dir, 0o777)
	case src.Secret != nil, src.ConfigMap != nil, src.DownwardAPI != nil, src.Projected != nil:
	default:
		return fmt.Errorf("unsupported volume type (supported: secret, configMap, downwardAPI, projected, emptyDir)")
	}
	payload, err := p.payload(ctx, pod, vol)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	w, err := volumeutil.NewAtomicWriter(dir, pod.Namespace+"/"+pod.Name+"/"+vol.Name)
	if err != nil {
		return err
	}
	// pkg/volume/secret/secret.go SetUpAt: Write then volume.SetVolumeOwnership(fsGroup).
	return w.Write(payload, func(string) error { return p.setOwnership(pod, dir) })
}

// setOwnership gives the files to the pod's fsGroup with group read, as
// pkg/volume/volume_linux.go SetVolumeOwnership does.
func (p *Pod) setOwnership(pod *v1.Pod, dir string) error {
	sc := pod.Spec.SecurityContext
	if sc == nil || sc.FSGroup == nil {
		return nil
	}
	gid := int(*sc.FSGroup)
	return filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		if err := os.Lchown(path, -1, gid); err != nil {
			return err
		}
		mode := info.Mode() | 0o040
		if info.IsDir() {
			mode |= 0o010 | os.ModeSetgid
		}
		return os.Chmod(path, mode)
	})
}

func (p *Pod) payload(ctx context.Context, pod *v1.Pod, vol *v1.Volume) (map[string]volumeutil.FileProjection, error) {
	src := vol.VolumeSource
	switch {
	case src.Secret != nil:
		return p.secretPayload(ctx, pod.Namespace, src.Secret.SecretName, src.Secret.Items,
			modeOr(src.Secret.DefaultMode, v1.SecretVolumeSourceDefaultMode), src.Secret.Optional)
	case src.ConfigMap != nil:
		return p.configMapPayload(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items,
			modeOr(src.ConfigMap.DefaultMode, v1.ConfigMapVolumeSourceDefaultMode), src.ConfigMap.Optional)
	case src.DownwardAPI != nil:
		return p.downwardPayload(pod, src.DownwardAPI.Items,
			modeOr(src.DownwardAPI.DefaultMode, v1.DownwardAPIVolumeSourceDefaultMode))
	default:
		return p.projectedPayload(ctx, pod, vol.Name, src.Projected)
	}
}

func modeOr(m *int32, def int32) *int32 {
	if m != nil {
		return m
	}
	return &def
}

func (p *Pod) getSecret(ctx context.Context, ns, name string, optional *bool) (*v1.Secret, error) {
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	s, err := p.cfg.Client.CoreV1().Secrets(ns).Get(cctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		// pkg/volume/secret/secret.go: an optional missing Secret is an empty volume.
		return &v1.Secret{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", ns, name, err)
	}
	return s, nil
}

func (p *Pod) getConfigMap(ctx context.Context, ns, name string, optional *bool) (*v1.ConfigMap, error) {
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c, err := p.cfg.Client.CoreV1().ConfigMaps(ns).Get(cctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return &v1.ConfigMap{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configmap %s/%s: %w", ns, name, err)
	}
	return c, nil
}
