package tokens_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

const (
	tenantA  = "11111111-1111-1111-1111-111111111111"
	tenantB  = "22222222-2222-2222-2222-222222222222"
	clientID = "33333333-3333-3333-3333-333333333333"
	appIDURI = "api://clusterconnect-server"
)

// clock is a settable clock shared by a test and its verifier.
type clock struct{ t atomic.Int64 }

func newClock() *clock               { c := &clock{}; c.set(time.Now()); return c }
func (c *clock) now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *clock) set(t time.Time)     { c.t.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }

type setup struct {
	is    *oidctest.Issuer
	v     *tokens.Verifier
	clock *clock
}

func newSetup(t testing.TB, tweak func(*tokens.Config)) *setup {
	is, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(is.Close)
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{
		TenantIDs:    []string{tenantA},
		Audiences:    []string{clientID, appIDURI},
		DiscoveryURL: is.EntraDiscoveryURL,
	})
	require.NoError(t, err)
	c := newClock()
	cfg := &tokens.Config{Issuers: issuers, HTTPClient: is.Client(), Now: c.now}
	if tweak != nil {
		tweak(cfg)
	}
	v, err := tokens.NewVerifier(cfg)
	require.NoError(t, err)
	return &setup{is: is, v: v, clock: c}
}

func (s *setup) claims(version int) oidctest.EntraClaims {
	aud := clientID
	if version == 1 {
		aud = appIDURI
	}
	now := s.clock.now()
	return oidctest.EntraClaims{
		Version: version, Tenant: tenantA, Audience: aud, OID: "oid-alice", Subject: "sub-alice",
		UPN: "alice@example.com", Groups: []string{"g-1"}, IssuedAt: now, NotBefore: now, Expiry: now.Add(time.Hour),
	}
}

func (s *setup) token(t testing.TB, c oidctest.EntraClaims) string {
	raw, err := s.is.EntraToken(c)
	require.NoError(t, err)
	return raw
}

func TestVerifyAcceptsEntraV1AndV2(t *testing.T) {
	s := newSetup(t, nil)
	for _, version := range []int{1, 2} {
		tok, err := s.v.Verify(context.Background(), s.token(t, s.claims(version)))
		require.NoError(t, err, "v%d", version)
		assert.Equal(t, oidctest.EntraIssuer(tenantA, version), tok.Issuer)
		assert.Equal(t, tenantA, tok.TenantID)
		assert.Equal(t, "alice@example.com", tok.StringClaim("upn"))
	}
}

func TestVerifyRejects(t *testing.T) {
	s := newSetup(t, nil)
	key := s.is.SigningKey()
	unpublished, err := oidctest.NewKey(jose.RS256)
	require.NoError(t, err)
	other, err := oidctest.NewKey(jose.RS256)
	require.NoError(t, err)
	now := s.clock.now()
	with := func(f func(*oidctest.EntraClaims)) string { c := s.claims(2); f(&c); return s.token(t, c) }
	claims := s.claims(2).Map()
	must := func(tok string, err error) string { require.NoError(t, err); return tok }

	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"expired", with(func(c *oidctest.EntraClaims) { c.Expiry = now.Add(-2 * time.Minute) }), tokens.ErrExpired},
		{"not yet valid", with(func(c *oidctest.EntraClaims) { c.NotBefore = now.Add(5 * time.Minute) }), tokens.ErrNotYetValid},
		{"issued in the future", with(func(c *oidctest.EntraClaims) { c.IssuedAt = now.Add(5 * time.Minute) }), tokens.ErrNotYetValid},
		{"no exp", with(func(c *oidctest.EntraClaims) { c.Extra = map[string]any{"exp": nil} }), tokens.ErrMissingClaim},
		{"wrong audience", with(func(c *oidctest.EntraClaims) { c.Audience = "api://another-app" }), tokens.ErrAudience},
		{"v2 token for the v1 audience of another app", with(func(c *oidctest.EntraClaims) { c.Audience = "00000003-0000-0000-c000-000000000000" }), tokens.ErrAudience},
		{"another tenant's issuer", with(func(c *oidctest.EntraClaims) { c.Tenant = tenantB }), tokens.ErrIssuer},
		{"tenant A issuer, tenant B tid", with(func(c *oidctest.EntraClaims) { c.Extra = map[string]any{"tid": tenantB} }), tokens.ErrTenant},
		{"no tid", with(func(c *oidctest.EntraClaims) { c.Extra = map[string]any{"tid": nil} }), tokens.ErrTenant},
		{"generic issuer", must(s.is.Token(map[string]any{"iss": s.is.URL, "aud": clientID, "exp": now.Add(time.Hour).Unix()})), tokens.ErrIssuer},
		{"alg none", oidctest.AlgNone(claims), tokens.ErrAlgorithm},
		{"HS256 keyed with the public key", must(oidctest.HS256WithPublicKey(key, claims)), tokens.ErrAlgorithm},
		{"unsigned", oidctest.Unsigned(key, claims), tokens.ErrSignature},
		{"tampered payload", must(oidctest.Tamper(s.token(t, s.claims(2)), "upn", "admin@example.com")), tokens.ErrSignature},
		{"two signatures", must(oidctest.TwoSignatures(key, other, claims)), tokens.ErrMalformed},
		{"signed by an unknown key", must(oidctest.Sign(unpublished, claims, nil)), tokens.ErrUnknownKey},
		{"unknown key using a published kid", must(oidctest.Sign(unpublished, claims, map[string]any{"kid": key.ID})), tokens.ErrSignature},
		{"PS256 is not allowed by default", must(oidctest.Sign(&oidctest.Key{ID: key.ID, Algorithm: jose.PS256, Private: key.Private}, claims, nil)), tokens.ErrAlgorithm},
		{"huge", "a" + strings.Repeat(".", 2) + strings.Repeat("a", tokens.MaxTokenSize), tokens.ErrMalformed},
		{"garbage", "garbage", tokens.ErrMalformed},
		{"empty", "", tokens.ErrMalformed},
		{"header not JSON", "bm90IGpzb24.e30.c2ln", tokens.ErrMalformed},
		{"claims not JSON", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", tokens.ErrMalformed},
		{"aud is a number", with(func(c *oidctest.EntraClaims) { c.Extra = map[string]any{"aud": 7} }), tokens.ErrMalformed},
		{"v2 issuer, ver 1.0", with(func(c *oidctest.EntraClaims) { c.Extra = map[string]any{"ver": "1.0"} }), tokens.ErrVersion},
		{"v1 issuer, ver 2.0", must(s.is.EntraToken(func() oidctest.EntraClaims {
			c := s.claims(1)
			c.Extra = map[string]any{"ver": "2.0"}
			return c
		}())), tokens.ErrVersion},
		{"no ver", with(func(c *oidctest.EntraClaims) { c.Extra = map[string]any{"ver": nil} }), tokens.ErrVersion},
		{"ver is a number", with(func(c *oidctest.EntraClaims) { c.Extra = map[string]any{"ver": 2.0} }), tokens.ErrVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.v.Verify(context.Background(), tc.token)
			require.ErrorIs(t, err, tc.want)
			if len(tc.token) > 20 {
				assert.NotContains(t, err.Error(), tc.token, "errors never carry the token")
			}
		})
	}
}

func TestExpiredErrorSaysWhen(t *testing.T) {
	s := newSetup(t, nil)
	c := s.claims(2)
	c.Expiry = s.clock.now().Add(-time.Hour).Truncate(time.Second)
	_, err := s.v.Verify(context.Background(), s.token(t, c))
	var ee *tokens.ExpiredError
	require.ErrorAs(t, err, &ee)
	assert.True(t, ee.Expiry.Equal(c.Expiry))
}

func TestClaimChecksRunBeforeAnyKeyFetch(t *testing.T) {
	s := newSetup(t, nil)
	for _, f := range []func(*oidctest.EntraClaims){
		func(c *oidctest.EntraClaims) { c.Audience = "elsewhere" },
		func(c *oidctest.EntraClaims) { c.Expiry = s.clock.now().Add(-time.Hour) },
		func(c *oidctest.EntraClaims) { c.Tenant = tenantB },
	} {
		c := s.claims(2)
		f(&c)
		_, err := s.v.Verify(context.Background(), s.token(t, c))
		require.Error(t, err)
	}
	assert.Zero(t, s.is.DiscoveryHits()+s.is.JWKSHits(), "no request to the issuer for tokens that fail cheap checks")
}

func TestAlgorithmsAllowedByConfig(t *testing.T) {
	s := newSetup(t, func(c *tokens.Config) { c.Algorithms = []string{"RS256", "ES256"} })
	ec, err := s.is.AddKey(jose.ES256)
	require.NoError(t, err)
	raw, err := oidctest.Sign(ec, s.claims(2).Map(), nil)
	require.NoError(t, err)
	_, err = s.v.Verify(context.Background(), raw)
	require.NoError(t, err)

	_, err = tokens.NewVerifier(&tokens.Config{Issuers: []tokens.Issuer{{URL: "https://x", Audiences: []string{"a"}}}, Algorithms: []string{"HS256"}})
	assert.ErrorContains(t, err, "cannot be allowed")
	_, err = tokens.NewVerifier(&tokens.Config{Issuers: []tokens.Issuer{{URL: "https://x", Audiences: []string{"a"}}}, Algorithms: []string{"none"}})
	assert.Error(t, err)
}

func TestKidRequiredWhenSetHasSeveralKeys(t *testing.T) {
	s := newSetup(t, nil)
	_, err := s.is.AddKey(jose.RS256) // now two published keys
	require.NoError(t, err)
	raw, err := oidctest.Sign(s.is.SigningKey(), s.claims(2).Map(), map[string]any{"kid": ""})
	require.NoError(t, err)
	_, err = s.v.Verify(context.Background(), raw)
	require.ErrorIs(t, err, tokens.ErrMalformed)
	assert.ErrorContains(t, err, "no kid")
}

func TestRequiredClaims(t *testing.T) {
	s := newSetup(t, func(c *tokens.Config) { c.RequiredClaims = map[string]string{"scp": "user_impersonation"} })
	c := s.claims(2)
	_, err := s.v.Verify(context.Background(), s.token(t, c))
	require.ErrorIs(t, err, tokens.ErrMissingClaim)
	c.Scope = "user_impersonation"
	_, err = s.v.Verify(context.Background(), s.token(t, c))
	require.NoError(t, err)
}

func TestKeyRotationIsPickedUp(t *testing.T) {
	s := newSetup(t, func(c *tokens.Config) { c.CacheSize = -1 })
	_, err := s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err)
	oldKey := s.is.SigningKey()
	_, err = s.is.Rotate()
	require.NoError(t, err)

	// Within the minimum refresh interval the new kid is unknown…
	_, err = s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.ErrorIs(t, err, tokens.ErrUnknownKey)
	// …and once it has passed, one refresh brings the new key in.
	s.clock.add(2 * time.Minute)
	c := s.claims(2)
	_, err = s.v.Verify(context.Background(), s.token(t, c))
	require.NoError(t, err)
	// The withdrawn key no longer verifies anything.
	old, err := oidctest.Sign(oldKey, c.Map(), nil)
	require.NoError(t, err)
	_, err = s.v.Verify(context.Background(), old)
	require.ErrorIs(t, err, tokens.ErrUnknownKey)
}

// A token verified with a key that the issuer later withdraws (a rotation,
// or a revocation after a leak) must stop working at the next refresh,
// whether its earlier result is cached or not.
func TestWithdrawnKeyStopsVerifying(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cacheSize int
	}{{"cache on", 0}, {"cache off", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t, func(c *tokens.Config) { c.CacheSize = tc.cacheSize })
			old := s.token(t, s.claims(2))
			_, err := s.v.Verify(context.Background(), old)
			require.NoError(t, err)
			_, err = s.v.Verify(context.Background(), old)
			require.NoError(t, err, "accepted again before any refresh")

			_, err = s.is.Rotate() // publishes a new key and withdraws the old one
			require.NoError(t, err)
			s.clock.add(2 * time.Minute) // a refresh is allowed again
			_, err = s.v.Verify(context.Background(), s.token(t, s.claims(2)))
			require.NoError(t, err, "a token with the new key forces a refresh")

			_, err = s.v.Verify(context.Background(), old)
			require.ErrorIs(t, err, tokens.ErrUnknownKey, "the old token is signed by a withdrawn key")
			_, err = s.v.Verify(context.Background(), old)
			require.ErrorIs(t, err, tokens.ErrUnknownKey, "and stays refused")
		})
	}
}

// A key set refresh that the issuer never answers holds a request only for
// the refresh wait; known keys keep verifying meanwhile, and the refresh
// goes on in the background.
func TestHungIssuerAnswersPromptly(t *testing.T) {
	s := newSetup(t, func(c *tokens.Config) { c.CacheSize = -1; c.RefreshWait = 100 * time.Millisecond })
	_, err := s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err)

	release := s.is.HangJWKS()
	defer release()
	newKey, err := s.is.AddKey(jose.RS256)
	require.NoError(t, err)
	s.clock.add(2 * time.Minute)
	hits := s.is.JWKSHits()
	_, err = s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.ErrorIs(t, err, tokens.ErrUnknownKey, "refused while the issuer still hangs")
	require.Eventually(t, func() bool { return s.is.JWKSHits() == hits+1 }, 10*time.Second, time.Millisecond, "the refresh was asked for")

	old, err := oidctest.Sign(s.is.Keys()[1], s.claims(2).Map(), nil)
	require.NoError(t, err)
	_, err = s.v.Verify(context.Background(), old)
	require.NoError(t, err, "the known key verifies during the hang")

	release()
	require.Eventually(t, func() bool {
		_, err := s.v.Verify(context.Background(), s.token(t, s.claims(2)))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the background refresh brings %s in", newKey.ID)
}

// With no keys known at all, a hung issuer is the server's trouble: 503,
// not a verdict on the token.
func TestHungIssuerFromTheStart(t *testing.T) {
	s := newSetup(t, func(c *tokens.Config) { c.RefreshWait = 100 * time.Millisecond })
	release := s.is.HangJWKS()
	defer release()
	raw := s.token(t, s.claims(2))
	_, err := s.v.Verify(context.Background(), raw)
	require.ErrorIs(t, err, tokens.ErrKeySet)
	release()
	require.Eventually(t, func() bool {
		_, err := s.v.Verify(context.Background(), raw)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "not cached as the token's fault")
}

func TestUnknownKidFloodCausesOneFetch(t *testing.T) {
	s := newSetup(t, func(c *tokens.Config) { c.CacheSize = -1 })
	_, err := s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err)
	before := s.is.JWKSHits()
	s.clock.add(2 * time.Minute) // a refresh is allowed again

	var wg sync.WaitGroup
	for i := range 50 {
		unknown, err := oidctest.NewKey(jose.RS256)
		require.NoError(t, err)
		raw, err := oidctest.Sign(unknown, s.claims(2).Map(), nil)
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.v.Verify(context.Background(), raw)
			assert.ErrorIs(t, err, tokens.ErrUnknownKey, "token %d", i)
		}()
	}
	wg.Wait()
	assert.Equal(t, before+1, s.is.JWKSHits(), "fifty unknown kids, one key-set fetch")
}

func TestWaiterGivesUpOnItsOwnContext(t *testing.T) {
	s := newSetup(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.v.Verify(ctx, s.token(t, s.claims(2)))
	require.ErrorIs(t, err, context.Canceled)
	// The shared fetch was not cancelled with it.
	_, err = s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err)
}

func TestKeySetOutageKeepsLastGoodKeys(t *testing.T) {
	s := newSetup(t, func(c *tokens.Config) { c.CacheSize = -1 })
	_, err := s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err)
	s.is.FailJWKS(http.StatusServiceUnavailable)
	s.clock.add(2 * time.Minute)

	unknown, err := oidctest.NewKey(jose.RS256)
	require.NoError(t, err)
	raw, err := oidctest.Sign(unknown, s.claims(2).Map(), nil)
	require.NoError(t, err)
	_, err = s.v.Verify(context.Background(), raw)
	require.ErrorIs(t, err, tokens.ErrUnknownKey, "a failed refresh for an unknown kid")
	_, err = s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err, "tokens signed with the known key still verify during the outage")
}

func TestKeySetUnavailableFromTheStart(t *testing.T) {
	s := newSetup(t, nil)
	s.is.FailJWKS(http.StatusInternalServerError)
	_, err := s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.ErrorIs(t, err, tokens.ErrKeySet)
	assert.False(t, errors.Is(err, tokens.ErrSignature))

	// Not cached as the token's fault: once the issuer is back, it verifies.
	s.is.FailJWKS(0)
	s.clock.add(2 * time.Minute)
	_, err = s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err)
}

func TestCacheControlMaxAgeRefreshesInBackground(t *testing.T) {
	s := newSetup(t, func(c *tokens.Config) { c.CacheSize = -1 })
	s.is.SetJWKSCacheControl("public, max-age=300")
	_, err := s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err)
	hits := s.is.JWKSHits()

	s.clock.add(4 * time.Minute)
	_, err = s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err)
	assert.Equal(t, hits, s.is.JWKSHits(), "fresh by max-age: no fetch")

	s.clock.add(2 * time.Minute)
	_, err = s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err, "a stale set still serves while it refreshes")
	require.Eventually(t, func() bool { return s.is.JWKSHits() == hits+1 }, 5*time.Second, time.Millisecond)
}

func TestCacheHoldsResultsUntilExpiry(t *testing.T) {
	s := newSetup(t, nil)
	c := s.claims(2)
	c.Expiry = s.clock.now().Add(10 * time.Minute)
	raw := s.token(t, c)
	_, err := s.v.Verify(context.Background(), raw)
	require.NoError(t, err)

	s.is.FailJWKS(http.StatusInternalServerError) // would fail any fetch
	s.clock.add(2 * time.Minute)
	tok, err := s.v.Verify(context.Background(), raw)
	require.NoError(t, err, "cached")
	assert.Equal(t, "alice@example.com", tok.StringClaim("upn"))

	s.clock.add(10 * time.Minute) // past exp and skew
	_, err = s.v.Verify(context.Background(), raw)
	require.ErrorIs(t, err, tokens.ErrExpired, "never served from the cache past its expiry")
}

// While the issuer hangs, a flood of tokens with keys nobody has seen
// makes one warning, not one per token: anyone can send them.
func TestHungIssuerIsLoggedOncePerEpisode(t *testing.T) {
	var logged syncBuffer
	s := newSetup(t, func(c *tokens.Config) {
		c.CacheSize = -1
		c.RefreshWait = 100 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	})
	_, err := s.v.Verify(context.Background(), s.token(t, s.claims(2)))
	require.NoError(t, err)
	release := s.is.HangJWKS()
	defer release()
	s.clock.add(2 * time.Minute)

	unknown, err := oidctest.NewKey(jose.RS256)
	require.NoError(t, err)
	raw, err := oidctest.Sign(unknown, s.claims(2).Map(), nil)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 201 {
		wg.Go(func() {
			_, err := s.v.Verify(context.Background(), raw)
			assert.ErrorIs(t, err, tokens.ErrUnknownKey)
		})
	}
	wg.Wait()
	assert.Equal(t, 1, strings.Count(logged.String(), "key set refresh is slow"), "%s", logged.String())
}

// syncBuffer is a bytes.Buffer for a logger that several goroutines use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
