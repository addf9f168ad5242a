package graph_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/graph"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tokens/signin"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

const (
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	audience = "api://clusterconnect-server"
	agentApp = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d"
)

type env struct {
	is       *oidctest.Issuer
	verifier *tokens.Verifier
}

func start(t *testing.T) *env {
	is, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(is.Close)
	is.AddApp(oidctest.App{ClientID: agentApp, Tenant: tenant, Secret: "agent-secret", ObjectID: "agent-oid"})
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenant}, Audiences: []string{audience}, DiscoveryURL: is.EntraDiscoveryURL})
	require.NoError(t, err)
	v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: is.Client()})
	require.NoError(t, err)
	return &env{is: is, verifier: v}
}

// resolver signs the agent in to Graph with its own secret, as an agent
// with a service principal would.
func (e *env) resolver(t *testing.T, tweak func(*graph.Config)) *graph.Resolver {
	own := &signin.ClientSecret{Config: signin.Config{
		AuthorityHost: e.is.AuthorityHost(), TenantID: tenant, ClientID: agentApp,
		Scopes: []string{signin.ServerScope(oidctest.GraphResource)}, HTTPClient: e.is.Client(),
	}, Secret: "agent-secret"}
	cfg := &graph.Config{TokenSource: source.Cached(source.FromFetcher(own), 0), Endpoint: e.is.GraphURL(), HTTPClient: e.is.Client()}
	if tweak != nil {
		tweak(cfg)
	}
	r, err := graph.New(cfg)
	require.NoError(t, err)
	return r
}

// overage is a verified token of a user in too many groups to carry.
func (e *env) overage(t *testing.T, oid string) *tokens.Token {
	raw, err := e.is.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, OID: oid, UPN: oid + "@example.com", GroupsOverage: true})
	require.NoError(t, err)
	tok, err := e.verifier.Verify(context.Background(), raw)
	require.NoError(t, err)
	return tok
}

func mapping(r tokens.GroupResolver) *tokens.Mapping {
	m := tokens.EntraMapping()
	m.GroupResolver = r
	return &m
}

func TestOverageResolvedThroughGraph(t *testing.T) {
	e := start(t)
	groups := []string{"g1", "g2", "g3", "g4", "g5"}
	e.is.SetMemberGroups("alice-oid", groups)
	e.is.SetGraphPageSize(2)
	m := mapping(e.resolver(t, nil))

	id, err := m.Identity(context.Background(), e.overage(t, "alice-oid"))
	require.NoError(t, err)
	assert.Equal(t, groups, id.Groups, "every page")
	assert.Equal(t, 3, e.is.GraphRequests())

	// The next request of the same user is answered from the cache.
	_, err = m.Identity(context.Background(), e.overage(t, "alice-oid"))
	require.NoError(t, err)
	assert.Equal(t, 3, e.is.GraphRequests())
}

func TestConcurrentRequestsShareOneLookup(t *testing.T) {
	e := start(t)
	e.is.SetMemberGroups("bob-oid", []string{"g1"})
	m := mapping(e.resolver(t, nil))
	tok := e.overage(t, "bob-oid")
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			id, err := m.Identity(context.Background(), tok)
			if assert.NoError(t, err) {
				assert.Equal(t, []string{"g1"}, id.Groups)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 1, e.is.GraphRequests())
}

func TestThrottlingIsWaitedOut(t *testing.T) {
	e := start(t)
	e.is.SetMemberGroups("carol-oid", []string{"g1"})
	e.is.ThrottleGraph(1, 1)
	id, err := mapping(e.resolver(t, nil)).Identity(context.Background(), e.overage(t, "carol-oid"))
	require.NoError(t, err)
	assert.Equal(t, []string{"g1"}, id.Groups)
	assert.Equal(t, 2, e.is.GraphRequests(), "one refused, one answered")
}

// Fail closed: a token whose groups cannot be had is refused, saying why,
// unless the mapping is told to go on without them.
func TestFailuresRefuseTheToken(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*env)
		cfg   func(*graph.Config)
		words string
	}{
		{"Graph fails", func(e *env) { e.is.FailGraph(http.StatusInternalServerError) }, nil, "500"},
		{"throttled longer than a lookup may take", func(e *env) { e.is.ThrottleGraph(5, 30) }, func(c *graph.Config) { c.Timeout = time.Second }, "throttling"},
		{"unknown user", func(*env) {}, nil, "Request_ResourceNotFound"},
		{"the agent's own sign-in fails", func(*env) {}, func(c *graph.Config) {
			c.TokenSource = source.Static("not-a-graph-token")
		}, "InvalidAuthenticationToken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t)
			tc.setup(e)
			m := mapping(e.resolver(t, tc.cfg))
			_, err := m.Identity(context.Background(), e.overage(t, "dave-oid"))
			require.ErrorIs(t, err, tokens.ErrGroupsOverage)
			assert.Contains(t, err.Error(), tc.words)

			m.OverageWithoutGroups = true
			id, err := m.Identity(context.Background(), e.overage(t, "dave-oid"))
			require.NoError(t, err)
			assert.Empty(t, id.Groups, "admitted without groups when told to")
		})
	}
}

func TestNewNeedsATokenSource(t *testing.T) {
	_, err := graph.New(&graph.Config{})
	require.Error(t, err)
}
