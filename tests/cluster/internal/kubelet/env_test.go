package kubelet

import (
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func envTestInput(links *bool) *envInput {
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1", Labels: map[string]string{"app": "x"}},
		Spec:       v1.PodSpec{NodeName: "wss-node", ServiceAccountName: "sa", EnableServiceLinks: links},
	}
	return &envInput{
		Pod: pod, PodIPs: []string{"10.244.0.2", "fd10:244::2"}, HostIPs: hostIPs,
		Services: []*v1.Service{
			{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
				Spec: v1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []v1.ServicePort{{Name: "https", Port: 443, Protocol: v1.ProtocolTCP}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "ns"},
				Spec: v1.ServiceSpec{ClusterIP: "10.96.3.4", Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "elsewhere"},
				Spec: v1.ServiceSpec{ClusterIP: "10.96.9.9", Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}}},
		},
		Secret: func(n string) (*v1.Secret, error) {
			if n != "s" {
				return nil, apierrors.NewNotFound(v1.Resource("secrets"), n)
			}
			return &v1.Secret{Data: map[string][]byte{"token": []byte("t0p"), "bad-key": []byte("x")}}, nil
		},
		ConfigMap: func(n string) (*v1.ConfigMap, error) {
			if n != "cm" {
				return nil, apierrors.NewNotFound(v1.Resource("configmaps"), n)
			}
			return &v1.ConfigMap{Data: map[string]string{"MODE": "fast", "LEVEL": "3"}}, nil
		},
	}
}

func TestResolveEnvFieldRefsAndExpansion(t *testing.T) {
	in := envTestInput(nil)
	in.Pod.Spec.Containers = []v1.Container{{Name: "app",
		Resources: v1.ResourceRequirements{Limits: v1.ResourceList{v1.ResourceMemory: resource.MustParse("64Mi")}},
		EnvFrom:   []v1.EnvFromSource{{Prefix: "CM_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}}},
		Env: []v1.EnvVar{
			{Name: "NAME", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "NS", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			{Name: "UID", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
			{Name: "IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "IPS", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIPs"}}},
			{Name: "NODE", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "SA", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
			{Name: "APP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "MEM", ValueFrom: &v1.EnvVarSource{ResourceFieldRef: &v1.ResourceFieldSelector{Resource: "limits.memory"}}},
			{Name: "TOKEN", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "s"}, Key: "token"}}},
			{Name: "LVL", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}, Key: "LEVEL"}}},
			{Name: "URL", Value: "http://$(NAME).$(NS):$(ECHO_SERVICE_PORT)/$(MISSING)$$(ESC)"},
		},
	}}
	in.Container = &in.Pod.Spec.Containers[0]
	env, err := resolveEnv(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"CM_LEVEL=3", "CM_MODE=fast", "NAME=p", "NS=ns", "UID=u-1", "IP=10.244.0.2", "IPS=10.244.0.2,fd10:244::2",
		"NODE=wss-node", "SA=sa", "APP=x", "MEM=67108864", "TOKEN=t0p", "LVL=3",
		"URL=http://p.ns:80/$(MISSING)$(ESC)",
		"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443", "KUBERNETES_SERVICE_PORT_HTTPS=443",
		"ECHO_SERVICE_HOST=10.96.3.4", "ECHO_PORT=tcp://10.96.3.4:80",
	} {
		if !slices.Contains(env, want) {
			t.Errorf("missing %q in %q", want, env)
		}
	}
	for _, e := range env {
		if strings.HasPrefix(e, "OTHER_") {
			t.Errorf("Service of another namespace leaked: %q", e)
		}
	}
}

func TestResolveEnvServiceLinksDisabled(t *testing.T) {
	off := false
	in := envTestInput(&off)
	in.Container = &v1.Container{Name: "app"}
	env, err := resolveEnv(in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "KUBERNETES_SERVICE_HOST=10.96.0.1") || !slices.Contains(env, "KUBERNETES_SERVICE_PORT=443") {
		t.Errorf("kubernetes Service variables must stay: %q", env)
	}
	for _, e := range env {
		if strings.HasPrefix(e, "ECHO_") {
			t.Errorf("enableServiceLinks=false still set %q", e)
		}
	}
}

func TestResolveEnvMissingKeys(t *testing.T) {
	in := envTestInput(nil)
	yes := true
	in.Container = &v1.Container{Name: "app", Env: []v1.EnvVar{
		{Name: "OPT", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "s"}, Key: "nope", Optional: &yes}}},
	}}
	env, err := resolveEnv(in)
	if err != nil {
		t.Fatalf("optional missing key must be skipped: %v", err)
	}
	for _, e := range env {
		if strings.HasPrefix(e, "OPT=") {
			t.Errorf("optional missing key set %q", e)
		}
	}
	in.Container.Env[0].ValueFrom.SecretKeyRef.Optional = nil
	if _, err := resolveEnv(in); err == nil {
		t.Fatal("a required missing key must fail")
	}
	in.Container.Env = nil
	in.Container.EnvFrom = []v1.EnvFromSource{{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "s"}}}}
	env, err = resolveEnv(in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "token=t0p") || !slices.Contains(env, "bad-key=x") {
		t.Errorf("envFrom must copy every key (kubelet_pods.go does not validate them): %q", env)
	}
	in.Container.EnvFrom = []v1.EnvFromSource{{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "absent"}, Optional: &yes}}}
	if _, err := resolveEnv(in); err != nil {
		t.Fatalf("optional missing envFrom secret must be skipped: %v", err)
	}
}

func TestExpandCommand(t *testing.T) {
	got := expandAll([]string{"--name=$(POD)", "$(UNSET)", "$$(POD)"}, []string{"POD=web-1"})
	want := []string{"--name=web-1", "$(UNSET)", "$(POD)"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}
