package tokens_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// verified runs Entra-shaped claims through a real Verifier, so the mapping
// sees exactly what Verify produces.
func verified(t *testing.T, s *setup, c oidctest.EntraClaims) *tokens.Token {
	t.Helper()
	tok, err := s.v.Verify(context.Background(), s.token(t, c))
	require.NoError(t, err)
	return tok
}

type staticGroups []string

func (g staticGroups) ResolveGroups(context.Context, *tokens.Token) ([]string, error) { return g, nil }

func TestEntraMapping(t *testing.T) {
	s := newSetup(t, nil)
	entra := tokens.EntraMapping()
	for _, tc := range []struct {
		name    string
		claims  func(c *oidctest.EntraClaims)
		mapping func(m *tokens.Mapping)
		want    tokens.Identity
		err     error
	}{
		{name: "user by UPN, groups by object ID, roles by name", claims: func(c *oidctest.EntraClaims) { c.Roles = []string{"Cluster.Reader"} },
			want: tokens.Identity{Username: "alice@example.com", UID: "oid-alice", Groups: []string{"g-1", "Cluster.Reader"},
				Extra: map[string][]string{"clusterconnect.io/oid": {"oid-alice"}, "clusterconnect.io/tid": {tenantA}}}},
		{name: "guest without upn falls back to the object ID", claims: func(c *oidctest.EntraClaims) { c.UPN = "" },
			want: tokens.Identity{Username: "oid-alice", UID: "oid-alice", Groups: []string{"g-1"},
				Extra: map[string][]string{"clusterconnect.io/oid": {"oid-alice"}, "clusterconnect.io/tid": {tenantA}}}},
		{name: "app-only token (idtyp=app) is the service principal's object ID", claims: func(c *oidctest.EntraClaims) {
			c.UPN, c.IDType, c.OID, c.Subject, c.Groups, c.Roles = "", "app", "sp-oid", "sp-oid", nil, []string{"Deployer"}
		}, want: tokens.Identity{Username: "sp-oid", UID: "sp-oid", Groups: []string{"Deployer"}, App: true,
			Extra: map[string][]string{"clusterconnect.io/oid": {"sp-oid"}, "clusterconnect.io/tid": {tenantA}}}},
		{name: "app-only v1 token without idtyp", claims: func(c *oidctest.EntraClaims) {
			c.Version, c.Audience, c.UPN, c.OID, c.Subject, c.Groups = 1, appIDURI, "", "sp-oid", "sp-oid", nil
		}, want: tokens.Identity{Username: "sp-oid", UID: "sp-oid", App: true,
			Extra: map[string][]string{"clusterconnect.io/oid": {"sp-oid"}, "clusterconnect.io/tid": {tenantA}}}},
		{name: "prefixes", mapping: func(m *tokens.Mapping) { m.UsernamePrefix, m.GroupsPrefix, m.ExtraClaims = "aad:", "aad:", nil },
			want: tokens.Identity{Username: "aad:alice@example.com", UID: "oid-alice", Groups: []string{"aad:g-1"}}},
		{name: "groups overage without a resolver is refused", claims: func(c *oidctest.EntraClaims) { c.GroupsOverage = true }, err: tokens.ErrGroupsOverage},
		{name: "hasgroups is overage too", claims: func(c *oidctest.EntraClaims) { c.Groups = nil; c.Extra = map[string]any{"hasgroups": true} }, err: tokens.ErrGroupsOverage},
		{name: "groups overage with a resolver", claims: func(c *oidctest.EntraClaims) { c.GroupsOverage = true },
			mapping: func(m *tokens.Mapping) {
				m.GroupResolver = staticGroups{"resolved-1", "resolved-2"}
				m.ExtraClaims = nil
			},
			want: tokens.Identity{Username: "alice@example.com", UID: "oid-alice", Groups: []string{"resolved-1", "resolved-2"}}},
		{name: "reserved username", claims: func(c *oidctest.EntraClaims) { c.UPN = "system:admin" }, err: tokens.ErrReservedName},
		{name: "reserved group", claims: func(c *oidctest.EntraClaims) { c.Groups = []string{"system:masters"} }, err: tokens.ErrReservedName},
		{name: "reserved names when explicitly allowed", claims: func(c *oidctest.EntraClaims) { c.Groups = []string{"system:masters"} },
			mapping: func(m *tokens.Mapping) { m.AllowReservedNames = true; m.ExtraClaims = nil },
			want:    tokens.Identity{Username: "alice@example.com", UID: "oid-alice", Groups: []string{"system:masters"}}},
		{name: "no username at all", claims: func(c *oidctest.EntraClaims) { c.UPN, c.OID = "", "" }, err: tokens.ErrMissingClaim},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.claims(2)
			if tc.claims != nil {
				tc.claims(&c)
			}
			m := entra
			if tc.mapping != nil {
				tc.mapping(&m)
			}
			id, err := m.Identity(context.Background(), verified(t, s, c))
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, *id)
		})
	}
}

func TestGroupsOverageErrorNamesTheSource(t *testing.T) {
	s := newSetup(t, nil)
	c := s.claims(2)
	c.GroupsOverage = true
	m := tokens.EntraMapping()
	_, err := m.Identity(context.Background(), verified(t, s, c))
	var oe *tokens.GroupsOverageError
	require.True(t, errors.As(err, &oe))
	assert.Contains(t, oe.Source, "getMemberObjects")
	assert.Contains(t, err.Error(), "overage")
}

func TestGenericMappingUsesSub(t *testing.T) {
	m := tokens.Mapping{}
	id, err := m.Identity(context.Background(), &tokens.Token{Subject: "s", Claims: map[string]any{"sub": "s", "groups": []any{"a", "b"}}})
	require.NoError(t, err)
	assert.Equal(t, &tokens.Identity{Username: "s", Groups: []string{"a", "b"}}, id)
}
