package impersonate_test

import (
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

const (
	tenantA  = "11111111-1111-1111-1111-111111111111"
	tenantB  = "22222222-2222-2222-2222-222222222222"
	clientID = "33333333-3333-3333-3333-333333333333"
)

// world is what every test here shares: the API server, the token issuer
// stand-in, and the handler's own service account, which may impersonate
// and nothing else.
type world struct {
	env    *kubetest.Env
	issuer *oidctest.Issuer
	agent  *kubetest.ServiceAccount
}

// worlds holds the world of each environment (a -count run gets a fresh
// environment).
var worlds = map[*kubetest.Env]*world{}

func getWorld(t testing.TB) *world {
	env := kubetest.Shared(t)
	if w := worlds[env]; w != nil {
		return w
	}
	w, err := newWorld(env)
	require.NoError(t, err)
	worlds[env] = w
	return w
}

func newWorld(env *kubetest.Env) (*world, error) {
	ctx := context.Background()
	w := &world{env: env}
	var err error
	if w.issuer, err = oidctest.Start(); err != nil {
		return nil, err
	}
	if w.agent, err = env.CreateServiceAccount(ctx, "clusterconnect", "agent"); err != nil {
		return nil, err
	}
	return w, env.Grant(ctx, "clusterconnect-agent-impersonator", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"users", "groups", "serviceaccounts"}, Verbs: []string{"impersonate"}},
		// Each extra key is a subresource of userextras, and RBAC has no
		// wildcard for subresources of one resource: name them.
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"uids", "userextras/clusterconnect.io/oid", "userextras/clusterconnect.io/tid"}, Verbs: []string{"impersonate"}},
		{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
	}, w.agent.Subject())
}

// proxy is a Handler in front of the real API server, served over TLS as a
// relay would reach it, with a count of the requests that reached the API
// server through it.
type proxy struct {
	w       *world
	handler *impersonate.Handler
	srv     *httptest.Server
	reached atomic.Int64
}

func newProxy(t testing.TB, tweak func(*impersonate.Config)) *proxy {
	w := getWorld(t)
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{
		TenantIDs: []string{tenantA}, Audiences: []string{clientID}, DiscoveryURL: w.issuer.EntraDiscoveryURL,
	})
	require.NoError(t, err)
	v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: w.issuer.Client()})
	require.NoError(t, err)
	p := &proxy{w: w}
	rc := &rest.Config{
		Host:            w.env.Host,
		BearerToken:     w.agent.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: w.env.CA.CertPEM()},
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				p.reached.Add(1)
				return rt.RoundTrip(r)
			})
		},
	}
	cfg := &impersonate.Config{RESTConfig: rc, Verifier: v, Mapping: tokens.EntraMapping()}
	if tweak != nil {
		tweak(cfg)
	}
	p.handler, err = impersonate.New(cfg)
	require.NoError(t, err)
	p.srv = httptest.NewUnstartedServer(p.handler)
	p.srv.EnableHTTP2 = true
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	return p
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// user is an Entra user of tenant A.
type user struct {
	upn, oid string
	groups   []string
}

var (
	alice = user{"alice@contoso.com", "oid-alice", []string{"grp-readers"}}
	bob   = user{"bob@contoso.com", "oid-bob", []string{"grp-operators"}}
	carol = user{"carol@contoso.com", "oid-carol", nil}
)

func (p *proxy) token(t testing.TB, u user, tweak func(*oidctest.EntraClaims)) string {
	c := oidctest.EntraClaims{Tenant: tenantA, Audience: clientID, UPN: u.upn, OID: u.oid, Subject: "sub-" + u.oid, Groups: u.groups, Scope: "user_impersonation"}
	if tweak != nil {
		tweak(&c)
	}
	raw, err := p.w.issuer.EntraToken(c)
	require.NoError(t, err)
	return raw
}

// kubectl returns kubectl set up to reach the API server through the
// handler with the given bearer token.
func (p *proxy) kubectl(t *testing.T, bearer string, env ...string) *kubetest.Kubectl {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	require.NoError(t, kubetest.WriteTokenKubeconfig(path, p.srv.URL, ca, bearer))
	return &kubetest.Kubectl{Kubeconfig: path, Env: env}
}

// client is an HTTP/1.1 client for the handler, so tests can send
// Connection headers.
func (p *proxy) client() *http.Client {
	tr := p.srv.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	return &http.Client{Transport: tr}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
