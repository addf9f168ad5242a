package tokens_test

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

const clusterHost = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/prod"

func popSetup(t *testing.T, tweak func(*tokens.PoPConfig)) *setup {
	return newSetup(t, func(c *tokens.Config) {
		c.PoP = &tokens.PoPConfig{Hosts: []string{clusterHost}}
		if tweak != nil {
			tweak(c.PoP)
		}
	})
}

// boundToken is an access token bound to key (nil: bound to nothing).
func (s *setup) boundToken(t *testing.T, key *oidctest.PoPKey, tweak func(*oidctest.EntraClaims)) string {
	c := s.claims(2)
	if key != nil {
		c.Extra = map[string]any{"cnf": key.Cnf()}
	}
	if tweak != nil {
		tweak(&c)
	}
	return s.token(t, c)
}

func mustPoPKey(t *testing.T, bits int) *oidctest.PoPKey {
	k, err := oidctest.NewPoPKey(bits)
	require.NoError(t, err)
	return k
}

func TestProofOfPossession(t *testing.T) {
	s := popSetup(t, nil)
	key, other := mustPoPKey(t, 0), mustPoPKey(t, 0)
	sign := func(k *oidctest.PoPKey, c oidctest.PoPClaims) string {
		if c.Time.IsZero() {
			c.Time = s.clock.now()
		}
		tok, err := k.Sign(c)
		require.NoError(t, err)
		return tok
	}
	at := s.boundToken(t, key, nil)
	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"bound access token, this cluster", sign(key, oidctest.PoPClaims{AccessToken: at, Host: clusterHost, Method: "GET", Nonce: "n1"}), nil},
		{"u in another case", sign(key, oidctest.PoPClaims{AccessToken: at, Host: strings.ToUpper(clusterHost), Nonce: "n2"}), nil},
		{"another cluster", sign(key, oidctest.PoPClaims{AccessToken: at, Host: clusterHost + "-other"}), tokens.ErrPoPHost},
		{"no u", sign(key, oidctest.PoPClaims{AccessToken: at}), tokens.ErrPoPHost},
		{"signed 20 minutes ago", sign(key, oidctest.PoPClaims{AccessToken: at, Host: clusterHost, Time: s.clock.now().Add(-20 * time.Minute)}), tokens.ErrPoPStale},
		{"signed in the future", sign(key, oidctest.PoPClaims{AccessToken: at, Host: clusterHost, Time: s.clock.now().Add(10 * time.Minute)}), tokens.ErrPoPStale},
		{"access token bound to another key", sign(other, oidctest.PoPClaims{AccessToken: at, Host: clusterHost}), tokens.ErrPoPBinding},
		{"access token bound to no key", sign(key, oidctest.PoPClaims{AccessToken: s.boundToken(t, nil, nil), Host: clusterHost}), tokens.ErrPoPBinding},
		{"carries one key, signed by another", sign(key, oidctest.PoPClaims{AccessToken: at, Host: clusterHost, SignWith: other}), tokens.ErrPoPSignature},
		{"a weak key", sign(mustPoPKey(t, 1024), oidctest.PoPClaims{AccessToken: at, Host: clusterHost}), tokens.ErrPoP},
		// (go-jose itself refuses moduli over 4096 bits; the verifier
		// says so too, should that change.)
		{"a huge key, costly to check", sign(key, oidctest.PoPClaims{AccessToken: at, Host: clusterHost, Extra: map[string]any{
			"cnf": map[string]any{"jwk": map[string]any{"kty": "RSA", "e": "AQAB", "n": base64.RawURLEncoding.EncodeToString(append([]byte{0xff}, make([]byte, 2047)...))}},
		}}), tokens.ErrPoP},
		{"no key", sign(key, oidctest.PoPClaims{AccessToken: at, Host: clusterHost, Extra: map[string]any{"cnf": nil}}), tokens.ErrPoP},
		{"no access token", sign(key, oidctest.PoPClaims{Host: clusterHost}), tokens.ErrPoP},
		{"a PoP token inside", sign(key, oidctest.PoPClaims{AccessToken: sign(key, oidctest.PoPClaims{AccessToken: at, Host: clusterHost, Nonce: "inner"}), Host: clusterHost}), tokens.ErrPoP},
		{"expired access token", sign(key, oidctest.PoPClaims{AccessToken: s.boundToken(t, key, func(c *oidctest.EntraClaims) {
			c.IssuedAt, c.NotBefore, c.Expiry = s.clock.now().Add(-2*time.Hour), s.clock.now().Add(-2*time.Hour), s.clock.now().Add(-time.Hour)
		}), Host: clusterHost}), tokens.ErrExpired},
		{"access token for another audience", sign(key, oidctest.PoPClaims{AccessToken: s.boundToken(t, key, func(c *oidctest.EntraClaims) {
			c.Audience = "api://someone-else"
		}), Host: clusterHost}), tokens.ErrAudience},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := s.v.Verify(context.Background(), tc.token)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				assert.NotContains(t, err.Error(), at, "errors never contain a token")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "oid-alice", tok.StringClaim("oid"), "the access token's identity")
		})
	}
}

// A PoP token is good once: a copy taken off the wire is refused.
func TestPoPTokenReplayedIsRefused(t *testing.T) {
	s := popSetup(t, func(c *tokens.PoPConfig) { c.ReplayCacheSize = 2 })
	key := mustPoPKey(t, 0)
	at := s.boundToken(t, key, nil)
	sign := func(nonce string) string {
		tok, err := key.Sign(oidctest.PoPClaims{AccessToken: at, Host: clusterHost, Time: s.clock.now(), Nonce: nonce})
		require.NoError(t, err)
		return tok
	}
	first := sign("1")
	_, err := s.v.Verify(context.Background(), first)
	require.NoError(t, err)
	_, err = s.v.Verify(context.Background(), first)
	require.ErrorIs(t, err, tokens.ErrPoPReplayed)

	// The cache is bounded: with two live tokens remembered, a third is
	// refused rather than a replay let through; once they age out, it
	// is taken.
	_, err = s.v.Verify(context.Background(), sign("2"))
	require.NoError(t, err)
	third := sign("3")
	_, err = s.v.Verify(context.Background(), third)
	require.ErrorIs(t, err, tokens.ErrPoPReplayed)
	assert.Contains(t, err.Error(), "retry shortly")
	s.clock.add(tokens.DefaultPoPMaxAge + 2*time.Minute)
	// The access token is still valid (an hour); the PoP tokens are not.
	_, err = s.v.Verify(context.Background(), third)
	require.ErrorIs(t, err, tokens.ErrPoPStale)
	_, err = s.v.Verify(context.Background(), sign("4"))
	require.NoError(t, err, "aged-out entries make room")
}

func TestPoPSettings(t *testing.T) {
	key := mustPoPKey(t, 0)
	t.Run("PoP not enabled", func(t *testing.T) {
		s := newSetup(t, nil)
		tok, err := key.Sign(oidctest.PoPClaims{AccessToken: s.boundToken(t, key, nil), Host: clusterHost})
		require.NoError(t, err)
		_, err = s.v.Verify(context.Background(), tok)
		require.ErrorIs(t, err, tokens.ErrPoP)
		assert.Contains(t, err.Error(), "not enabled")
	})
	t.Run("PoP required", func(t *testing.T) {
		s := popSetup(t, func(c *tokens.PoPConfig) { c.Required = true })
		_, err := s.v.Verify(context.Background(), s.boundToken(t, nil, nil))
		require.ErrorIs(t, err, tokens.ErrPoPRequired)
		assert.Contains(t, err.Error(), "--pop-enabled")
	})
	t.Run("no hosts", func(t *testing.T) {
		_, err := tokens.NewVerifier(&tokens.Config{Issuers: []tokens.Issuer{{URL: "https://issuer.example", Audiences: []string{"a"}}}, PoP: &tokens.PoPConfig{}})
		require.ErrorIs(t, err, tokens.ErrPoP)
	})
}
