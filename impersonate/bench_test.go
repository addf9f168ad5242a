package impersonate_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// BenchmarkOverhead compares GET /api/v1/namespaces/default straight to the
// API server (admin token) with the same request through the handler (an
// Entra token, verified, cached, and impersonated). The handler's cost is
// the difference; the API server's impersonation checks are part of it.
func BenchmarkOverhead(b *testing.B) {
	p := newProxy(b, nil)
	// Alice gets what the admin gets, so both sides do the same work.
	err := p.w.env.Grant(context.Background(), "bench-alice-get-namespaces", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}},
	}, kubetest.User(alice.upn))
	if err != nil {
		b.Fatal(err)
	}
	bearer := p.token(b, alice, nil)
	waitFor200(b, p.srv.Client(), p.srv.URL+"/api/v1/namespaces/default", bearer)
	direct, err := rest.HTTPClientFor(p.w.env.RESTConfig())
	if err != nil {
		b.Fatal(err)
	}
	viaHandler := p.srv.Client()
	for _, mode := range []struct {
		name   string
		client *http.Client
		url    string
		token  string
	}{
		{"direct", direct, p.w.env.Host, ""},
		{"handler", viaHandler, p.srv.URL, bearer},
	} {
		b.Run(mode.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, mode.url+"/api/v1/namespaces/default", nil)
					if mode.token != "" {
						req.Header.Set("Authorization", "Bearer "+mode.token)
					}
					resp, err := mode.client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		})
	}
}

func waitFor200(b *testing.B, c *http.Client, url, bearer string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+bearer)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatal("the grant never took effect")
}
