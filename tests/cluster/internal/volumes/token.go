package volumes

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// tokenEntry is one cached TokenRequest result.
type tokenEntry struct {
	token   string
	expires time.Time
	ttl     time.Duration
}

// RequiresRefresh says whether a token must be renewed: older than 80% of its life or than
// 24 h (pkg/kubelet/token/token_manager.go requiresRefresh).
func RequiresRefresh(now, expires time.Time, ttl time.Duration) bool {
	iat := expires.Add(-ttl)
	if now.After(iat.Add(ttl * 8 / 10)) {
		return true
	}
	return now.After(iat.Add(24 * time.Hour))
}

// token returns the pod's bound service-account token for this projection, asking the
// TokenRequest API only when the cached one needs a refresh.
func (p *Pod) token(ctx context.Context, pod *v1.Pod, key string, tp *v1.ServiceAccountTokenProjection) (string, error) {
	p.mu.Lock()
	e := p.tokens[key]
	p.mu.Unlock()
	now := p.cfg.Now()
	if e != nil && !RequiresRefresh(now, e.expires, e.ttl) {
		return e.token, nil
	}
	var auds []string
	if tp.Audience != "" {
		auds = []string{tp.Audience}
	}
	// pkg/volume/projected/projected.go: the token is bound to the pod.
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         auds,
		ExpirationSeconds: tp.ExpirationSeconds,
		BoundObjectRef: &authenticationv1.BoundObjectReference{
			APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
		},
	}}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	res, err := p.cfg.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(cctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		if e != nil && now.Before(e.expires) {
			return e.token, nil // token_manager.go: keep the old token while it is valid
		}
		return "", fmt.Errorf("token for serviceaccount %s/%s: %w", pod.Namespace, sa, err)
	}
	ttl := time.Hour
	if res.Spec.ExpirationSeconds != nil {
		ttl = time.Duration(*res.Spec.ExpirationSeconds) * time.Second
	}
	p.mu.Lock()
	p.tokens[key] = &tokenEntry{token: res.Status.Token, expires: res.Status.ExpirationTimestamp.Time, ttl: ttl}
	p.mu.Unlock()
	return res.Status.Token, nil
}
