package volumes

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func testPod() *v1.Pod {
	mode := int32(0o400)
	exp := int64(600)
	yes := true
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "uid-1", Labels: map[string]string{"app": "web"}},
		Spec: v1.PodSpec{ServiceAccountName: "sa", Volumes: []v1.Volume{
			{Name: "tls", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "tls",
				Items: []v1.KeyToPath{{Key: "tls.crt", Path: "cert.pem"}, {Key: "tls.key", Path: "key.pem", Mode: &mode}}}}},
			{Name: "opt", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "absent", Optional: &yes}}},
			{Name: "scratch", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
			{Name: "api", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
				{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token", Audience: "aud", ExpirationSeconds: &exp}},
				{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"},
					Items: []v1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{
					{Path: "namespace", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
			}}}},
		}},
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSyncWritesAndRefreshes(t *testing.T) {
	secret := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls", Namespace: "ns"},
		Data: map[string][]byte{"tls.crt": []byte("CERT1"), "tls.key": []byte("KEY1")}}
	ca := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: "ns"}, Data: map[string]string{"ca.crt": "CA"}}
	cs := fake.NewClientset(secret, ca)
	var requests []*authenticationv1.TokenRequest
	now := time.Unix(10000, 0)
	cs.PrependReactor("create", "serviceaccounts", func(a k8stesting.Action) (bool, kruntime.Object, error) {
		ca, ok := a.(k8stesting.CreateAction)
		if !ok || a.GetSubresource() != "token" {
			return false, nil, nil
		}
		tr := ca.GetObject().(*authenticationv1.TokenRequest).DeepCopy()
		requests = append(requests, tr)
		tr.Status.Token = "tok" + string(rune('0'+len(requests)))
		tr.Status.ExpirationTimestamp = metav1.NewTime(now.Add(time.Duration(*tr.Spec.ExpirationSeconds) * time.Second))
		return true, tr, nil
	})
	dir := t.TempDir()
	p, err := New(Config{Dir: dir, Client: cs, Now: func() time.Time { return now }}, testPod())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	tls := p.Path("tls")
	if tls != filepath.Join(dir, "kubelet/pods/uid-1/volumes/tls") {
		t.Fatalf("volume path %s", tls)
	}
	if read(t, tls+"/cert.pem") != "CERT1" || read(t, tls+"/key.pem") != "KEY1" {
		t.Fatal("secret items not written")
	}
	if target, _ := os.Readlink(tls + "/cert.pem"); target != "..data/cert.pem" {
		t.Fatalf("not laid out by the atomic writer: %q", target)
	}
	if st, _ := os.Stat(tls + "/key.pem"); st.Mode().Perm() != 0o400 {
		t.Fatalf("item mode %v", st.Mode())
	}
	if st, _ := os.Stat(tls + "/cert.pem"); st.Mode().Perm() != 0o644 {
		t.Fatalf("default mode %v", st.Mode())
	}
	if st, err := os.Stat(p.Path("scratch")); err != nil || st.Mode().Perm() != 0o777 {
		t.Fatalf("emptyDir %v %v", st, err)
	}
	api := p.Path("api")
	if read(t, api+"/token") != "tok1" || read(t, api+"/ca.crt") != "CA" || read(t, api+"/namespace") != "ns" {
		t.Fatal("projected volume content")
	}
	r := requests[0]
	if len(r.Spec.Audiences) != 1 || r.Spec.Audiences[0] != "aud" || *r.Spec.ExpirationSeconds != 600 ||
		r.Spec.BoundObjectRef == nil || r.Spec.BoundObjectRef.Kind != "Pod" || r.Spec.BoundObjectRef.UID != "uid-1" {
		t.Fatalf("token request %+v", r.Spec)
	}

	// Rotate the Secret: the next Sync shows it; the token is reused until 80% of its life.
	secret.Data["tls.crt"] = []byte("CERT2")
	if _, err := cs.CoreV1().Secrets("ns").Update(context.Background(), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(479 * time.Second)
	if err := p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if read(t, tls+"/cert.pem") != "CERT2" {
		t.Fatal("secret update not refreshed")
	}
	if len(requests) != 1 {
		t.Fatalf("token refreshed too early: %d requests", len(requests))
	}
	now = now.Add(2 * time.Second) // past 480 s = 80% of 600 s
	if err := p.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(requests) != 2 || read(t, api+"/token") != "tok2" {
		t.Fatalf("token not refreshed at 80%%: %d requests", len(requests))
	}
	if err := p.Teardown(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tls); !os.IsNotExist(err) {
		t.Fatal("teardown left the volume")
	}
}

func TestMissingRequiredSecretNamesTheVolume(t *testing.T) {
	pod := testPod()
	pod.Spec.Volumes = pod.Spec.Volumes[:1]
	p, _ := New(Config{Dir: t.TempDir(), Client: fake.NewClientset()}, pod)
	err := p.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), `volume "tls"`) {
		t.Fatalf("want an error naming the volume, got %v", err)
	}
}
