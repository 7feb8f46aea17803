package volumes

import (
	"context"
	"fmt"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/pkg/volume/configmap"
	"k8s.io/kubernetes/pkg/volume/secret"
	volumeutil "k8s.io/kubernetes/pkg/volume/util"
)

func (p *Pod) secretPayload(ctx context.Context, ns, name string, items []v1.KeyToPath, mode *int32, optional *bool) (map[string]volumeutil.FileProjection, error) {
	s, err := p.getSecret(ctx, ns, name, optional)
	if err != nil {
		return nil, err
	}
	// The kubelet's own payload builder (items, modes, optional keys).
	return secret.MakePayload(items, s, mode, nil, optional != nil && *optional)
}

func (p *Pod) configMapPayload(ctx context.Context, ns, name string, items []v1.KeyToPath, mode *int32, optional *bool) (map[string]volumeutil.FileProjection, error) {
	c, err := p.getConfigMap(ctx, ns, name, optional)
	if err != nil {
		return nil, err
	}
	return configmap.MakePayload(items, c, mode, nil, optional != nil && *optional)
}

// downwardPayload follows pkg/volume/downwardapi/downwardapi.go CollectData (which needs a
// full VolumeHost only for the node's allocatable, given here by Config).
func (p *Pod) downwardPayload(pod *v1.Pod, items []v1.DownwardAPIVolumeFile, mode *int32) (map[string]volumeutil.FileProjection, error) {
	out := map[string]volumeutil.FileProjection{}
	for _, f := range items {
		fp := volumeutil.FileProjection{Mode: *mode}
		if f.Mode != nil {
			fp.Mode = *f.Mode
		}
		switch {
		case f.FieldRef != nil:
			v, err := fieldpath.ExtractFieldPathAsString(pod, f.FieldRef.FieldPath)
			if err != nil {
				return nil, fmt.Errorf("downwardAPI item %q: %w", f.Path, err)
			}
			fp.Data = []byte(v)
		case f.ResourceFieldRef != nil:
			v, err := resource.ExtractResourceValueByContainerNameAndNodeAllocatable(f.ResourceFieldRef, pod, f.ResourceFieldRef.ContainerName, p.cfg.NodeAllocatable)
			if err != nil {
				return nil, fmt.Errorf("downwardAPI item %q: %w", f.Path, err)
			}
			fp.Data = []byte(v)
		}
		out[filepath.Clean(f.Path)] = fp
	}
	return out, nil
}

// projectedPayload follows pkg/volume/projected/projected.go collectData.
func (p *Pod) projectedPayload(ctx context.Context, pod *v1.Pod, volName string, src *v1.ProjectedVolumeSource) (map[string]volumeutil.FileProjection, error) {
	mode := modeOr(src.DefaultMode, v1.ProjectedVolumeSourceDefaultMode)
	out := map[string]volumeutil.FileProjection{}
	merge := func(m map[string]volumeutil.FileProjection) {
		for k, v := range m {
			out[k] = v
		}
	}
	for i, s := range src.Sources {
		switch {
		case s.Secret != nil:
			m, err := p.secretPayload(ctx, pod.Namespace, s.Secret.Name, s.Secret.Items, mode, s.Secret.Optional)
			if err != nil {
				return nil, err
			}
			merge(m)
		case s.ConfigMap != nil:
			m, err := p.configMapPayload(ctx, pod.Namespace, s.ConfigMap.Name, s.ConfigMap.Items, mode, s.ConfigMap.Optional)
			if err != nil {
				return nil, err
			}
			merge(m)
		case s.DownwardAPI != nil:
			m, err := p.downwardPayload(pod, s.DownwardAPI.Items, mode)
			if err != nil {
				return nil, err
			}
			merge(m)
		case s.ServiceAccountToken != nil:
			tp := s.ServiceAccountToken
			fsUser := desiredRunAsUser(pod)
			m := *mode
			// projected.go: with an fsUser or fsGroup the token is 0600 (0640 after ownership).
			if fsUser != nil || (pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.FSGroup != nil) {
				m = 0o600
			}
			tok, err := p.token(ctx, pod, fmt.Sprintf("%s/%d", volName, i), tp)
			if err != nil {
				return nil, err
			}
			out[tp.Path] = volumeutil.FileProjection{Data: []byte(tok), Mode: m, FsUser: fsUser}
		default:
			return nil, fmt.Errorf("projected source %d: unsupported (supported: secret, configMap, downwardAPI, serviceAccountToken)", i)
		}
	}
	return out, nil
}

// desiredRunAsUser is the user every container of the pod runs as, or nil when they differ
// or none is set (pkg/kubelet/volumemanager/volume_manager.go getPodVolumeRunAsUser-like).
func desiredRunAsUser(pod *v1.Pod) *int64 {
	var uid *int64
	all := append(append([]v1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for i := range all {
		var u *int64
		if sc := all[i].SecurityContext; sc != nil && sc.RunAsUser != nil {
			u = sc.RunAsUser
		} else if psc := pod.Spec.SecurityContext; psc != nil && psc.RunAsUser != nil {
			u = psc.RunAsUser
		}
		if u == nil {
			return nil
		}
		if uid != nil && *uid != *u {
			return nil
		}
		uid = u
	}
	return uid
}
