package access_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/clusterconnect/clusterconnect/access"
)

// Requests read as kube-apiserver's request info resolver reads them.
func TestParseAPIRequest(t *testing.T) {
	for _, tt := range []struct {
		method, path string
		want         access.APIRequest
		ok           bool
	}{
		{"GET", "/clusters/prod/api/v1/namespaces/web/pods", access.APIRequest{Resource: "pods", Verb: "list", Namespace: "web"}, true},
		{"GET", "/api/v1/namespaces/web/pods?watch=true", access.APIRequest{Resource: "pods", Verb: "watch", Namespace: "web"}, true},
		{"GET", "/api/v1/watch/namespaces/web/pods", access.APIRequest{Resource: "pods", Verb: "watch", Namespace: "web"}, true},
		{"POST", "/clusters/prod/api/v1/namespaces/web/pods/nginx/exec", access.APIRequest{Resource: "pods", Subresource: "exec", Verb: "create", Namespace: "web"}, true},
		{"GET", "/api/v1/namespaces/web/pods/nginx/exec/", access.APIRequest{Resource: "pods", Subresource: "exec", Verb: "get", Namespace: "web"}, true},
		{"POST", "/api/v1/namespaces/web/pods/nginx/portforward", access.APIRequest{Resource: "pods", Subresource: "portforward", Verb: "create", Namespace: "web"}, true},
		{"PATCH", "/api/v1/namespaces/web/secrets/tls", access.APIRequest{Resource: "secrets", Verb: "patch", Namespace: "web"}, true},
		{"DELETE", "/api/v1/namespaces/web/secrets", access.APIRequest{Resource: "secrets", Verb: "deletecollection", Namespace: "web"}, true},
		{"PUT", "/apis/apps/v1/namespaces/web/deployments/api/scale", access.APIRequest{Resource: "deployments.apps", Subresource: "scale", Verb: "update", Namespace: "web"}, true},
		{"GET", "/api/v1/namespaces/web", access.APIRequest{Resource: "namespaces", Verb: "get", Namespace: "web"}, true},
		{"PUT", "/api/v1/namespaces/web/finalize", access.APIRequest{Resource: "namespaces", Subresource: "finalize", Verb: "update", Namespace: "web"}, true},
		{"GET", "/api/v1/nodes", access.APIRequest{Resource: "nodes", Verb: "list"}, true},
		{"GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin", access.APIRequest{Resource: "clusterroles.rbac.authorization.k8s.io", Verb: "get"}, true},
		{"GET", "/api", access.APIRequest{}, true},
		{"GET", "/apis/apps/v1", access.APIRequest{}, true},
		{"GET", "/version", access.APIRequest{}, true},
		{"GET", "/", access.APIRequest{}, true},
		// Spelt another way than kube-apiserver would read them.
		{"POST", "/api/v1/namespaces/web/pods/nginx/./exec", access.APIRequest{}, false},
		{"POST", "/api/v1/namespaces/web/pods//nginx/exec", access.APIRequest{}, false},
		{"POST", "/api/v1/namespaces/web/pods/x/../nginx/exec", access.APIRequest{}, false},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			u, _ := url.Parse(tt.path)
			got, ok := access.ParseAPIRequest(tt.method, u.Path, u.Query().Get)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

// FuzzParseAPIRequest: whatever the path, the parser neither panics nor
// names a resource for a path it said it could not read, and a resource
// it names is one segment of the path.
func FuzzParseAPIRequest(f *testing.F) {
	for _, s := range []string{"/api/v1/namespaces/a/pods/b/exec", "/apis/apps/v1/watch/deployments", "/clusters/x/api/v1/nodes", "//", "/api/v1/namespaces/a/./b"} {
		f.Add(http.MethodPost, s)
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		r, ok := access.ParseAPIRequest(method, path, nil)
		if !ok && r != (access.APIRequest{}) {
			t.Fatalf("%q: unreadable, yet %+v", path, r)
		}
		if r.Resource != "" && r.Verb == "" {
			t.Fatalf("%q: a resource without a verb: %+v", path, r)
		}
	})
}
