package kubelet

import (
	"fmt"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/pkg/kubelet/envvars"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// envInput is everything a container's environment depends on.
type envInput struct {
	Pod             *v1.Pod
	Container       *v1.Container
	PodIPs, HostIPs []string
	// Services are the Services of the pod's namespace and of "default".
	Services        []*v1.Service
	NodeAllocatable v1.ResourceList
	Secret          func(name string) (*v1.Secret, error)
	ConfigMap       func(name string) (*v1.ConfigMap, error)
}

// serviceEnv is pkg/kubelet/kubelet_pods.go getServiceEnvVarMap: the `kubernetes` Service of
// "default" always, the pod namespace's Services only with enableServiceLinks.
func serviceEnv(in *envInput) map[string]string {
	links := in.Pod.Spec.EnableServiceLinks == nil || *in.Pod.Spec.EnableServiceLinks
	byName := map[string]*v1.Service{}
	for _, s := range in.Services {
		if !v1helperIsServiceIPSet(s) {
			continue
		}
		switch {
		case s.Namespace == in.Pod.Namespace && links:
			byName[s.Name] = s
		case s.Namespace == "default" && s.Name == "kubernetes":
			if _, ok := byName[s.Name]; !ok {
				byName[s.Name] = s
			}
		}
	}
	var list []*v1.Service
	for _, s := range byName {
		list = append(list, s)
	}
	out := map[string]string{}
	for _, e := range envvars.FromServices(list) {
		out[e.Name] = e.Value
	}
	return out
}

func v1helperIsServiceIPSet(s *v1.Service) bool {
	return s.Spec.ClusterIP != v1.ClusterIPNone && s.Spec.ClusterIP != ""
}

// resolveEnv is pkg/kubelet/kubelet_pods.go makeEnvironmentVariables: envFrom, then env with
// $(VAR) expansion, then the Service variables not already set. The result is KEY=VALUE in a
// stable order (declared keys first, then the rest sorted).
func resolveEnv(in *envInput) ([]string, error) {
	svc := serviceEnv(in)
	env := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	c := in.Container
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := in.ConfigMap(from.ConfigMapRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
					continue
				}
				return nil, fmt.Errorf("envFrom configMap %q: %w", from.ConfigMapRef.Name, err)
			}
			for _, k := range sortedKeys(cm.Data) {
				set(from.Prefix+k, cm.Data[k]) // kubelet_pods.go: keys are not validated here

			}
		case from.SecretRef != nil:
			s, err := in.Secret(from.SecretRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && from.SecretRef.Optional != nil && *from.SecretRef.Optional {
					continue
				}
				return nil, fmt.Errorf("envFrom secret %q: %w", from.SecretRef.Name, err)
			}
			keys := make([]string, 0, len(s.Data))
			for k := range s.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				set(from.Prefix+k, string(s.Data[k]))

			}
		}
	}
	mapping := expansion.MappingFuncFor(env, svc)
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expansion.Expand(e.Value, mapping))
			continue
		}
		v, skip, err := valueFrom(in, e.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %q: %w", e.Name, err)
		}
		if !skip {
			set(e.Name, v)
		}
	}
	for _, k := range sortedKeys(svc) {
		if _, ok := env[k]; !ok {
			set(k, svc[k])
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+env[k])
	}
	return out, nil
}

func valueFrom(in *envInput, src *v1.EnvVarSource) (val string, skip bool, err error) {
	switch {
	case src.FieldRef != nil:
		v, err := podFieldValue(in, src.FieldRef.FieldPath)
		return v, false, err
	case src.ResourceFieldRef != nil:
		name := src.ResourceFieldRef.ContainerName
		if name == "" {
			name = in.Container.Name
		}
		v, err := resource.ExtractResourceValueByContainerNameAndNodeAllocatable(src.ResourceFieldRef, in.Pod, name, in.NodeAllocatable)
		return v, false, err
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := in.ConfigMap(ref.Name)
		if err != nil {
			return "", optional, ignoreIf(optional, fmt.Errorf("configMap %q: %w", ref.Name, err))
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			return "", optional, ignoreIf(optional, fmt.Errorf("key %q not in configMap %q", ref.Key, ref.Name))
		}
		return v, false, nil
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := in.Secret(ref.Name)
		if err != nil {
			return "", optional, ignoreIf(optional, fmt.Errorf("secret %q: %w", ref.Name, err))
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			return "", optional, ignoreIf(optional, fmt.Errorf("key %q not in secret %q", ref.Key, ref.Name))
		}
		return string(v), false, nil
	}
	return "", false, fmt.Errorf("unsupported valueFrom")
}

func ignoreIf(ok bool, err error) error {
	if ok {
		return nil
	}
	return err
}

// podFieldValue is pkg/kubelet/kubelet_pods.go podFieldSelectorRuntimeValue.
func podFieldValue(in *envInput, path string) (string, error) {
	switch path {
	case "spec.nodeName":
		return in.Pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return in.Pod.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return first(in.HostIPs), nil
	case "status.hostIPs":
		return strings.Join(in.HostIPs, ","), nil
	case "status.podIP":
		return first(in.PodIPs), nil
	case "status.podIPs":
		return strings.Join(in.PodIPs, ","), nil
	}
	return fieldpath.ExtractFieldPathAsString(in.Pod, path)
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
