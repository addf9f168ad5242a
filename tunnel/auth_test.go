package tunnel_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

// fixedCredential sends the same credential on every attempt.
type fixedCredential string

func (c fixedCredential) Credential(context.Context) (string, error) { return string(c), nil }

// An agent whose credential is refused never gets a connection, and the
// relay counts the refusal by reason.
func TestRejectedAgentsNeverConnect(t *testing.T) {
	agentKey, otherKey := newKey(t), newKey(t)
	assertions, err := tunnel.NewAssertionAuthenticator(tunnel.AssertionConfig{
		Keys:     map[string][]crypto.PublicKey{clusterID: {agentKey.Public()}, "other-cluster": {otherKey.Public()}},
		Audience: "https://relay.example.com",
	})
	require.NoError(t, err)
	validOnce, err := (&tunnel.AssertionCredential{ClusterID: clusterID, Key: agentKey, Audience: "https://relay.example.com"}).Credential(context.Background())
	require.NoError(t, err)
	require.NoError(t, assertions.Authenticate(context.Background(), clusterID, validOnce), "first use is fine")

	for _, tc := range []struct {
		name      string
		auth      tunnel.Authenticator
		clusterID string
		cred      tunnel.Credential
		reason    string
	}{
		{"wrong secret", tunnel.SecretAuthenticator{clusterID: secret}, clusterID, tunnel.SecretCredential("guess"), "bad-secret"},
		{"secret of another cluster", tunnel.SecretAuthenticator{clusterID: secret, "other-cluster": "other"}, "other-cluster", tunnel.SecretCredential(secret), "bad-secret"},
		{"unknown cluster", tunnel.SecretAuthenticator{clusterID: secret}, "unregistered", tunnel.SecretCredential(secret), "unknown-cluster"},
		{"assertion signed by an unregistered key", assertions, clusterID, &tunnel.AssertionCredential{ClusterID: clusterID, Key: newKey(t)}, "bad-signature"},
		{"rogue agent claims another cluster with its own key", assertions, "other-cluster", &tunnel.AssertionCredential{ClusterID: "other-cluster", Key: agentKey}, "bad-signature"},
		{"replayed assertion", assertions, clusterID, fixedCredential(validOnce), "replayed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, echo, harnessOpts{auth: tc.auth, noAgent: true})
			h.startAgent(echo, harnessOpts{agentCfg: func(c *tunnel.AgentConfig) {
				c.ClusterID = tc.clusterID
				c.Credential = tc.cred
			}})
			require.Eventually(t, func() bool { return h.relay.Stats().HandshakeFailures[tc.reason] >= 2 }, 10*time.Second, 5*time.Millisecond,
				"want refusals for %q, got %v", tc.reason, h.relay.Stats().HandshakeFailures)
			assert.False(t, h.relay.Connected(tc.clusterID))
			assert.Zero(t, h.relay.Stats().ConnectionsOpened)
			resp, err := h.client().Get(h.srv.URL + "/clusters/" + tc.clusterID + "/")
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		})
	}
}

// An assertion names the one relay it is for: made for relay A (and used
// there), it is refused by relay B within its lifetime, even though B
// trusts the same agent key.
func TestAssertionIsBoundToOneRelay(t *testing.T) {
	agentKey := newKey(t)
	keys := map[string][]crypto.PublicKey{clusterID: {agentKey.Public()}}
	relay := func() (*harness, *tunnel.AssertionAuthenticator) {
		var auth *tunnel.AssertionAuthenticator
		h := newHarness(t, echo, harnessOpts{noAgent: true, auth: tunnel.AuthenticatorFunc(func(ctx context.Context, id, cred string) error {
			return auth.Authenticate(ctx, id, cred)
		})})
		aud, err := tunnel.AssertionAudience(h.srv.URL)
		require.NoError(t, err)
		auth, err = tunnel.NewAssertionAuthenticator(tunnel.AssertionConfig{Keys: keys, Audience: aud})
		require.NoError(t, err)
		return h, auth
	}
	a, authA := relay()
	b, _ := relay()

	// An agent whose credential names no audience gets its relay's.
	a.startAgent(echo, harnessOpts{agentCfg: func(c *tunnel.AgentConfig) {
		c.Credential = &tunnel.AssertionCredential{ClusterID: clusterID, Key: agentKey}
	}})
	a.waitConnected(clusterID)

	audA, err := tunnel.AssertionAudience(a.srv.URL)
	require.NoError(t, err)
	captured, err := (&tunnel.AssertionCredential{ClusterID: clusterID, Key: agentKey, Audience: audA}).Credential(context.Background())
	require.NoError(t, err)
	require.NoError(t, authA.Authenticate(context.Background(), clusterID, captured), "good at the relay it names")

	b.startAgent(echo, harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.Credential = fixedCredential(captured) }})
	require.Eventually(t, func() bool { return b.relay.Stats().HandshakeFailures["wrong-audience"] >= 2 }, 10*time.Second, 5*time.Millisecond,
		"want wrong-audience refusals, got %v", b.relay.Stats().HandshakeFailures)
	assert.False(t, b.relay.Connected(clusterID))
	assert.Zero(t, b.relay.Stats().ConnectionsOpened)
}

func TestAssertionAudienceIsRequired(t *testing.T) {
	_, err := tunnel.NewAssertionAuthenticator(tunnel.AssertionConfig{Keys: map[string][]crypto.PublicKey{clusterID: {newKey(t).Public()}}})
	assert.ErrorContains(t, err, "Audience is required")
	_, err = (&tunnel.AssertionCredential{ClusterID: clusterID, Key: newKey(t)}).Credential(context.Background())
	assert.ErrorContains(t, err, "Audience is empty")
}

func TestAssertionAudience(t *testing.T) {
	for in, want := range map[string]string{
		"https://relay.example.com":                       "https://relay.example.com",
		"https://Relay.Example.com:443/tunnel/v1/connect": "https://relay.example.com",
		"https://relay.example.com:8443/":                 "https://relay.example.com:8443",
		"https://[::1]:8443":                              "https://[::1]:8443",
		"http://relay.example.com":                        "",
		"relay.example.com":                               "",
		"https://user@relay.example.com":                  "",
	} {
		got, err := tunnel.AssertionAudience(in)
		if want == "" {
			assert.Error(t, err, in)
			continue
		}
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
}

func TestAssertionChecks(t *testing.T) {
	key := newKey(t)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	auth, err := tunnel.NewAssertionAuthenticator(tunnel.AssertionConfig{
		Keys:     map[string][]crypto.PublicKey{clusterID: {key.Public()}},
		Audience: "relay.example.com",
	})
	require.NoError(t, err)
	tunnel.SetAssertionClock(auth, func() time.Time { return now })

	sign := func(k crypto.Signer, alg jose.SignatureAlgorithm, c jwt.Claims) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k}, nil)
		require.NoError(t, err)
		tok, err := jwt.Signed(s).Claims(c).Serialize()
		require.NoError(t, err)
		return tok
	}
	good := func() jwt.Claims {
		return jwt.Claims{
			Issuer: clusterID, Subject: clusterID, Audience: jwt.Audience{"relay.example.com"},
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)), ID: randomID(t),
		}
	}
	with := func(f func(*jwt.Claims)) string { c := good(); f(&c); return sign(key, jose.ES256, c) }

	for _, tc := range []struct {
		name, token, reason string
	}{
		{"valid", with(func(*jwt.Claims) {}), ""},
		{"expired", with(func(c *jwt.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-5 * time.Minute))
			c.Expiry = jwt.NewNumericDate(now.Add(-time.Minute))
		}), "expired"},
		{"within clock skew", with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-10 * time.Second)) }), ""},
		{"issued in the future", with(func(c *jwt.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(5 * time.Minute))
			c.Expiry = jwt.NewNumericDate(now.Add(6 * time.Minute))
		}), "not-yet-valid"},
		{"lifetime too long", with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(24 * time.Hour)) }), "lifetime-too-long"},
		{"wrong audience", with(func(c *jwt.Claims) { c.Audience = jwt.Audience{"elsewhere"} }), "wrong-audience"},
		{"subject is another cluster", with(func(c *jwt.Claims) { c.Subject = "other" }), "wrong-cluster"},
		{"no jti", with(func(c *jwt.Claims) { c.ID = "" }), "malformed"},
		{"no exp", with(func(c *jwt.Claims) { c.Expiry = nil }), "malformed"},
		{"HS256 keyed with a secret", func() string {
			s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
			tok, _ := jwt.Signed(s).Claims(good()).Serialize()
			return tok
		}(), "malformed"},
		{"alg none", "eyJhbGciOiJub25lIn0." + "eyJzdWIiOiJ0ZXN0LWNsdXN0ZXIifQ.", "malformed"},
		{"garbage", "not-a-jwt", "malformed"},
		{"other key", sign(newKey(t), jose.ES256, good()), "bad-signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := auth.Authenticate(context.Background(), clusterID, tc.token)
			if tc.reason == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tunnel.ErrUnauthorized)
			var ae *tunnel.AuthError
			require.True(t, errors.As(err, &ae))
			assert.Equal(t, tc.reason, ae.Reason)
			assert.NotContains(t, err.Error(), tc.token, "errors never carry the credential")
		})
	}

	t.Run("replay", func(t *testing.T) {
		tok := with(func(*jwt.Claims) {})
		require.NoError(t, auth.Authenticate(context.Background(), clusterID, tok))
		var ae *tunnel.AuthError
		require.ErrorAs(t, auth.Authenticate(context.Background(), clusterID, tok), &ae)
		assert.Equal(t, "replayed", ae.Reason)
	})
}

func randomID(t *testing.T) string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sharedReplays is a replay cache in memory, shared by the relays of one
// test; fail makes it unreachable.
type sharedReplays struct {
	mu   sync.Mutex
	seen map[string]bool
	fail bool
}

func (s *sharedReplays) Claim(_ context.Context, key string, _ time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return false, errors.New("store unreachable")
	}
	if s.seen[key] {
		return false, nil
	}
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	s.seen[key] = true
	return true, nil
}

// An assertion used at one replica of a fleet is refused at the others;
// with the shared cache unreachable each replica still refuses what it
// has seen itself.
func TestAssertionReplayedAtAnotherReplica(t *testing.T) {
	agentKey := newKey(t)
	keys := map[string][]crypto.PublicKey{clusterID: {agentKey.Public()}}
	shared := &sharedReplays{}
	replica := func() *tunnel.AssertionAuthenticator {
		a, err := tunnel.NewAssertionAuthenticator(tunnel.AssertionConfig{Keys: keys, Audience: "https://relay.example.com", Replays: shared})
		require.NoError(t, err)
		return a
	}
	a, b := replica(), replica()
	cred := &tunnel.AssertionCredential{ClusterID: clusterID, Key: agentKey, Audience: "https://relay.example.com"}
	assertion, err := cred.Credential(context.Background())
	require.NoError(t, err)

	require.NoError(t, a.Authenticate(context.Background(), clusterID, assertion))
	err = b.Authenticate(context.Background(), clusterID, assertion)
	var ae *tunnel.AuthError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "replayed", ae.Reason)
	assert.ErrorContains(t, err, "another relay replica")

	shared.fail = true
	fresh, err := cred.Credential(context.Background())
	require.NoError(t, err)
	assert.NoError(t, b.Authenticate(context.Background(), clusterID, fresh), "the store away: judged by this relay's memory")
	err = b.Authenticate(context.Background(), clusterID, fresh)
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "replayed", ae.Reason, "which still refuses a replay here")
}

// Anyone on the internet can knock with a wrong secret: the relay counts
// every refusal, but logs one line per episode, not one per knock.
func TestRejectedAgentsAreLoggedOncePerEpisode(t *testing.T) {
	logged := &logLines{}
	h := newHarness(t, echo, harnessOpts{noAgent: true, relayCfg: func(c *tunnel.RelayConfig) {
		c.Logger = slog.New(slog.NewTextHandler(logged, nil))
	}})
	h.startAgent(echo, harnessOpts{agentCfg: func(c *tunnel.AgentConfig) {
		c.Credential = tunnel.SecretCredential("guess")
		c.Connections = 4
	}})
	require.Eventually(t, func() bool { return h.relay.Stats().HandshakeFailures["bad-secret"] >= 50 }, 30*time.Second, 5*time.Millisecond)
	logged.mu.Lock()
	lines := strings.Count(logged.buf.String(), `msg="agent rejected"`)
	logged.mu.Unlock()
	assert.Equal(t, 1, lines, "one line for %d refusals", h.relay.Stats().HandshakeFailures["bad-secret"])
}
