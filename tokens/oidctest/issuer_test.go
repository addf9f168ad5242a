package oidctest_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

const tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"

func start(t *testing.T) *oidctest.Issuer {
	is, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(is.Close)
	return is
}

func getJSON(t *testing.T, is *oidctest.Issuer, url string, v any) *http.Response {
	resp, err := is.Client().Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	}
	return resp
}

func keySet(t *testing.T, is *oidctest.Issuer) jose.JSONWebKeySet {
	var set jose.JSONWebKeySet
	resp := getJSON(t, is, is.JWKSURL(), &set)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return set
}

func TestDiscoveryNamesEntraIssuers(t *testing.T) {
	is := start(t)
	for _, tc := range []struct {
		url, issuer string
	}{
		{is.DiscoveryURL(), is.URL},
		{is.EntraDiscoveryURL(tenant, 1), "https://sts.windows.net/" + tenant + "/"},
		{is.EntraDiscoveryURL(tenant, 2), "https://login.microsoftonline.com/" + tenant + "/v2.0"},
	} {
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		getJSON(t, is, tc.url, &doc)
		assert.Equal(t, tc.issuer, doc.Issuer, tc.url)
		assert.Equal(t, is.JWKSURL(), doc.JWKSURI, tc.url)
	}
}

func TestEntraTokenVerifiesAgainstPublishedKeys(t *testing.T) {
	is := start(t)
	for _, version := range []int{1, 2} {
		raw, err := is.EntraToken(oidctest.EntraClaims{
			Version: version, Tenant: tenant, Audience: "api://server", OID: "oid-1",
			UPN: "alice@example.com", Groups: []string{"g1"},
		})
		require.NoError(t, err)
		tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
		require.NoError(t, err)
		set := keySet(t, is)
		keys := set.Key(tok.Headers[0].KeyID)
		require.Len(t, keys, 1, "the token's kid is in the published set")
		var claims map[string]any
		require.NoError(t, tok.Claims(keys[0].Key, &claims))
		assert.Equal(t, oidctest.EntraIssuer(tenant, version), claims["iss"])
		assert.Equal(t, tenant, claims["tid"])
		assert.Equal(t, []any{"g1"}, claims["groups"])
		assert.InDelta(t, time.Now().Add(time.Hour).Unix(), claims["exp"], 5)
	}
}

func TestRotateWithdrawsOldKeys(t *testing.T) {
	is := start(t)
	old := is.SigningKey()
	fresh, err := is.Rotate()
	require.NoError(t, err)
	set := keySet(t, is)
	assert.Empty(t, set.Key(old.ID))
	assert.Len(t, set.Key(fresh.ID), 1)
}

func TestFailJWKS(t *testing.T) {
	is := start(t)
	is.FailJWKS(http.StatusServiceUnavailable)
	var set jose.JSONWebKeySet
	resp := getJSON(t, is, is.JWKSURL(), &set)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	is.FailJWKS(0)
	is.SetJWKSCacheControl("max-age=60")
	resp = getJSON(t, is, is.JWKSURL(), &set)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "max-age=60", resp.Header.Get("Cache-Control"))
	assert.EqualValues(t, 2, is.JWKSHits())
}

func TestHostileTokensAreWhatTheySay(t *testing.T) {
	is := start(t)
	key := is.SigningKey()
	claims := oidctest.EntraClaims{Tenant: tenant, Audience: "api://server"}.Map()

	none := oidctest.AlgNone(claims)
	assert.True(t, strings.HasSuffix(none, "."), "alg none carries no signature")
	_, err := jwt.ParseSigned(none, []jose.SignatureAlgorithm{jose.RS256})
	assert.Error(t, err)

	hs, err := oidctest.HS256WithPublicKey(key, claims)
	require.NoError(t, err)
	tok, err := jwt.ParseSigned(hs, []jose.SignatureAlgorithm{jose.HS256})
	require.NoError(t, err)
	assert.Equal(t, "HS256", tok.Headers[0].Algorithm)

	signed, err := is.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: "api://server"})
	require.NoError(t, err)
	tampered, err := oidctest.Tamper(signed, "aud", "api://other")
	require.NoError(t, err)
	tok, err = jwt.ParseSigned(tampered, []jose.SignatureAlgorithm{jose.RS256})
	require.NoError(t, err)
	var out map[string]any
	assert.Error(t, tok.Claims(key.Private.Public(), &out), "the signature no longer matches")

	other, err := oidctest.NewKey(jose.RS256)
	require.NoError(t, err)
	two, err := oidctest.TwoSignatures(key, other, claims)
	require.NoError(t, err)
	jws, err := jose.ParseSignedJSON(two, []jose.SignatureAlgorithm{jose.RS256})
	require.NoError(t, err)
	assert.Len(t, jws.Signatures, 2)
}

func TestGroupsOverageReplacesGroups(t *testing.T) {
	m := oidctest.EntraClaims{Tenant: tenant, Groups: []string{"g1"}, GroupsOverage: true}.Map()
	assert.NotContains(t, m, "groups")
	assert.Equal(t, map[string]any{"groups": "src1"}, m["_claim_names"])
}
