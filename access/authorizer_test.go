package access_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/graph"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tokens/signin"
	"github.com/clusterconnect/clusterconnect/tokens/source"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

const (
	tenantA  = "aaaaaaaa-0000-4000-8000-00000000000a"
	tenantB  = "bbbbbbbb-0000-4000-8000-00000000000b"
	audience = "api://clusterconnect"
	ops      = "99999999-0000-4000-8000-000000000009" // a group
	alice    = "11111111-0000-4000-8000-000000000001"
	bob      = "22222222-0000-4000-8000-000000000002"
	deployer = "33333333-0000-4000-8000-000000000003" // a CI app's client ID
)

type env struct {
	t      *testing.T
	issuer *oidctest.Issuer
	authz  *access.Authorizer
}

func newEnv(t *testing.T, policy string, tweak ...func(*oidctest.Issuer, *access.Config)) *env {
	t.Helper()
	is, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(is.Close)
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenantA, tenantB}, Audiences: []string{audience}, DiscoveryURL: is.EntraDiscoveryURL})
	require.NoError(t, err)
	v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: is.Client()})
	require.NoError(t, err)
	p, err := access.ParsePolicy([]byte(policy))
	require.NoError(t, err)
	cfg := &access.Config{Verifier: v, Policy: p}
	for _, f := range tweak {
		f(is, cfg)
	}
	a, err := access.New(cfg)
	require.NoError(t, err)
	return &env{t: t, issuer: is, authz: a}
}

func (e *env) token(c oidctest.EntraClaims) string {
	if c.Tenant == "" {
		c.Tenant = tenantA
	}
	if c.Audience == "" {
		c.Audience = audience
	}
	tok, err := e.issuer.EntraToken(c)
	require.NoError(e.t, err)
	return tok
}

// ask asks about one request and returns the refusal (nil if let through)
// and the release function.
func (e *env) ask(cluster, bearer string) (*tunnel.AccessError, func()) {
	r := httptest.NewRequest(http.MethodGet, "/clusters/"+cluster+"/api", nil)
	if bearer != "" {
		r.Header.Set("Authorization", "Bearer "+bearer)
	}
	release, err := e.authz.AuthorizeClient(r, cluster)
	if err == nil {
		require.NotNil(e.t, release)
		return nil, release
	}
	var ae *tunnel.AccessError
	require.True(e.t, errors.As(err, &ae), "%v", err)
	return ae, nil
}

const policy = `{
  "clusters": {
    "prod":    {"tenants": ["` + tenantA + `"], "groups": ["` + ops + `"], "apps": ["` + deployer + `"]},
    "dev":     {"users": ["` + bob + `"]},
    "open":    {},
    "sa-only": {"passThroughUnverified": true, "users": ["nobody"]}
  }
}`

// With a GroupResolver, a caller whose groups overflowed the token is let
// in by the groups Graph says; if Graph cannot say, not at all.
func TestOverageResolvedAtTheFrontDoor(t *testing.T) {
	const relayApp = "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
	e := newEnv(t, policy, func(is *oidctest.Issuer, c *access.Config) {
		is.AddApp(oidctest.App{ClientID: relayApp, Tenant: tenantA, Secret: "relay-secret", ObjectID: "relay-oid"})
		own := &signin.ClientSecret{Config: signin.Config{AuthorityHost: is.AuthorityHost(), TenantID: tenantA, ClientID: relayApp,
			Scopes: []string{signin.ServerScope(oidctest.GraphResource)}, HTTPClient: is.Client()}, Secret: "relay-secret"}
		r, err := graph.New(&graph.Config{TokenSource: source.Cached(source.FromFetcher(own), 0), Endpoint: is.GraphURL(), HTTPClient: is.Client()})
		require.NoError(t, err)
		c.GroupResolver = r
	})
	e.issuer.SetMemberGroups(alice, []string{"other", ops})
	e.issuer.SetMemberGroups(bob, []string{"other"})
	refused, release := e.ask("prod", e.token(oidctest.EntraClaims{OID: alice, GroupsOverage: true}))
	require.Nil(t, refused, "in ops, says Graph")
	release()
	refused, _ = e.ask("prod", e.token(oidctest.EntraClaims{OID: bob, GroupsOverage: true}))
	require.NotNil(t, refused)
	assert.Equal(t, http.StatusForbidden, refused.Code)
	// The implicit flow says overage with hasgroups instead.
	refused, release = e.ask("prod", e.token(oidctest.EntraClaims{OID: alice, Extra: map[string]any{"hasgroups": true}}))
	require.Nil(t, refused, "hasgroups is an overage too, and Graph says ops")
	release()

	e.issuer.FailGraph(http.StatusInternalServerError)
	refused, _ = e.ask("prod", e.token(oidctest.EntraClaims{OID: "carol", GroupsOverage: true}))
	require.NotNil(t, refused, "fail closed")
	assert.Equal(t, http.StatusForbidden, refused.Code)
}

func TestPolicyDecides(t *testing.T) {
	e := newEnv(t, policy)
	aliceOps := e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}})
	aliceOpsB := e.token(oidctest.EntraClaims{Tenant: tenantB, OID: alice, Groups: []string{ops}})
	bobTok := e.token(oidctest.EntraClaims{OID: bob})
	ci := e.token(oidctest.EntraClaims{OID: "sp-object", AppID: deployer, IDType: "app"})
	overage := e.token(oidctest.EntraClaims{OID: alice, GroupsOverage: true})
	for _, tc := range []struct {
		name, cluster, token string
		allowed              bool
	}{
		{"a group member", "prod", aliceOps, true},
		{"the same member from another tenant", "prod", aliceOpsB, false},
		{"a listed app (CI)", "prod", ci, true},
		{"not in the group", "prod", bobTok, false},
		{"groups overage is not a group", "prod", overage, false},
		{"a listed user", "dev", bobTok, true},
		{"another user", "dev", aliceOps, false},
		{"any verified caller", "open", bobTok, true},
		{"an unknown cluster", "nowhere", aliceOps, false},
		{"a verified caller not listed on a pass-through cluster", "sa-only", aliceOps, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused, release := e.ask(tc.cluster, tc.token)
			if tc.allowed {
				assert.Nil(t, refused)
				release()
				return
			}
			require.NotNil(t, refused)
			assert.Equal(t, http.StatusForbidden, refused.Code)
		})
	}
}

// To a caller not allowed on it, a cluster that does not exist and one
// that does look exactly the same.
func TestNoOracle(t *testing.T) {
	e := newEnv(t, policy)
	stranger := e.token(oidctest.EntraClaims{OID: "stranger"})
	expired := e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}, Expiry: time.Now().Add(-time.Hour)})
	for _, bearer := range []string{stranger, expired, "not-a-jwt", ""} {
		unknown, _ := e.ask("no-such-cluster", bearer)
		forbidden, _ := e.ask("prod", bearer)
		require.NotNil(t, unknown)
		assert.Equal(t, unknown, forbidden)
		assert.NotContains(t, forbidden.Message, "prod")
	}
	refused, _ := e.ask("prod", expired)
	assert.Equal(t, http.StatusUnauthorized, refused.Code)
	assert.Contains(t, refused.Message, "expired", "the caller learns what is wrong with its token")
	refused, _ = e.ask("prod", "")
	assert.Equal(t, http.StatusUnauthorized, refused.Code, "kubectl's exec plugin fetches a new token on 401")
}

// A pass-through cluster takes tokens the relay cannot verify (its own
// service-account tokens), but not a trusted issuer's token that fails.
func TestPassThroughUnverified(t *testing.T) {
	e := newEnv(t, policy)
	key, err := oidctest.NewKey(jose.RS256)
	require.NoError(t, err)
	sa, err := oidctest.Sign(key, map[string]any{"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ci:deployer",
		"aud": []string{"https://kubernetes.default.svc"}, "exp": time.Now().Add(time.Hour).Unix()}, nil)
	require.NoError(t, err)

	refused, release := e.ask("sa-only", sa)
	assert.Nil(t, refused)
	release()
	refused, release = e.ask("sa-only", "an-opaque-token")
	assert.Nil(t, refused)
	release()
	refused, _ = e.ask("prod", sa)
	require.NotNil(t, refused, "only where the policy says so")
	assert.Equal(t, http.StatusUnauthorized, refused.Code)

	expired := e.token(oidctest.EntraClaims{OID: "nobody", Expiry: time.Now().Add(-time.Hour)})
	refused, _ = e.ask("sa-only", expired)
	require.NotNil(t, refused, "a trusted issuer's failing token is not passed on")
	assert.Equal(t, http.StatusUnauthorized, refused.Code)
}

func TestCallerStreamLimit(t *testing.T) {
	e := newEnv(t, `{"clusters": {"open": {}}, "limits": {"callerStreams": 2, "clusterStreams": 3}}`)
	alice, bob := e.token(oidctest.EntraClaims{OID: alice}), e.token(oidctest.EntraClaims{OID: bob})
	_, r1 := e.ask("open", alice)
	_, r2 := e.ask("open", alice)
	refused, _ := e.ask("open", alice)
	require.NotNil(t, refused, "a third concurrent request of one caller")
	assert.Equal(t, http.StatusTooManyRequests, refused.Code)
	assert.Equal(t, "caller-streams", refused.Reason)
	assert.Equal(t, time.Second, refused.RetryAfter)

	_, r3 := e.ask("open", bob) // another caller still gets in
	require.NotNil(t, r3)
	refused, _ = e.ask("open", bob)
	require.NotNil(t, refused, "the cluster's own bound")
	assert.Equal(t, "cluster-streams", refused.Reason)

	r1()
	r1() // a second call changes nothing
	_, r4 := e.ask("open", bob)
	require.NotNil(t, r4, "a released stream is free again")
	refused, _ = e.ask("open", alice)
	require.NotNil(t, refused)
	r2()
	r3()
	r4()
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, `{"clusters": {"open": {"limits": {"callerRate": 0.5, "callerBurst": 2}}}}`)
	alice := e.token(oidctest.EntraClaims{OID: alice})
	for range 2 {
		refused, release := e.ask("open", alice)
		require.Nil(t, refused)
		release()
	}
	refused, _ := e.ask("open", alice)
	require.NotNil(t, refused)
	assert.Equal(t, http.StatusTooManyRequests, refused.Code)
	assert.Equal(t, "caller-rate", refused.Reason)
	assert.Greater(t, refused.RetryAfter, time.Second, "one request per two seconds")
	assert.LessOrEqual(t, refused.RetryAfter, 2*time.Second)
	refused, _ = e.ask("open", e.token(oidctest.EntraClaims{OID: bob}))
	assert.Nil(t, refused, "rates are per caller")
}

func TestSetPolicyAppliesToTheNextRequest(t *testing.T) {
	e := newEnv(t, policy)
	bobTok := e.token(oidctest.EntraClaims{OID: bob})
	refused, release := e.ask("dev", bobTok)
	require.Nil(t, refused)
	p, err := access.ParsePolicy([]byte(`{"clusters": {"dev": {"users": ["someone-else"]}}}`))
	require.NoError(t, err)
	require.NoError(t, e.authz.SetPolicy(p))
	refused, _ = e.ask("dev", bobTok)
	require.NotNil(t, refused)
	assert.Equal(t, http.StatusForbidden, refused.Code)
	release() // a request admitted under the old policy ends normally
}

// Callers the relay cannot verify each count as one: a flood of random
// tokens on a pass-through cluster is bounded by MaxCallers.
func TestTrackedCallersAreBounded(t *testing.T) {
	e := newEnv(t, policy)
	p, _ := access.ParsePolicy([]byte(policy))
	a, err := access.New(&access.Config{Verifier: verifierOf(t, e), Policy: p, MaxCallers: 10})
	require.NoError(t, err)
	e.authz = a
	var releases []func()
	for i := range 10 {
		refused, release := e.ask("sa-only", fmt.Sprint("opaque-", i))
		require.Nil(t, refused)
		releases = append(releases, release)
	}
	refused, _ := e.ask("sa-only", "opaque-10")
	require.NotNil(t, refused, "the eleventh caller, with ten in flight")
	assert.Equal(t, http.StatusTooManyRequests, refused.Code)
	for _, r := range releases {
		r()
	}
}

func verifierOf(t *testing.T, e *env) access.TokenVerifier {
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenantA}, Audiences: []string{audience}, DiscoveryURL: e.issuer.EntraDiscoveryURL})
	require.NoError(t, err)
	v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: e.issuer.Client()})
	require.NoError(t, err)
	return v
}

func TestParsePolicyRefusesMistakes(t *testing.T) {
	for _, bad := range []string{
		`{"clusters": {"prod": {"grups": ["x"]}}}`,
		`{"clusters": {"Bad ID!": {}}}`,
		`{"clusters": {"prod": {"users": [""]}}}`,
		`{"limits": {"callerStreams": -1}}`,
		`{"clusters": {}} {}`,
	} {
		_, err := access.ParsePolicy([]byte(bad))
		assert.Error(t, err, bad)
	}
}
