package tunnel

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/clusterconnect/clusterconnect/internal/logx"
)

// AssertionAudience returns the audience that names a relay in agent
// assertions: the origin of its URL, https://host[:port], with the host in
// lower case and port 443 left out, whatever path the URL has. An agent
// derives it from its RelayURL and the relay from its public URL, so an
// assertion made for one relay is refused by every other.
func AssertionAudience(relayURL string) (string, error) {
	u, err := url.Parse(relayURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("tunnel: %q is not an https:// relay URL", relayURL)
	}
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if p := u.Port(); p != "" && p != "443" {
		host += ":" + p
	}
	return "https://" + host, nil
}

const (
	defaultAssertionLifetime    = 2 * time.Minute
	defaultMaxAssertionLifetime = 10 * time.Minute
	defaultAssertionLeeway      = 30 * time.Second
	maxReplayEntries            = 1 << 20
)

// assertionAlgorithms are the signature algorithms an AssertionAuthenticator
// accepts: asymmetric only, so a public key can never act as an HMAC secret.
var assertionAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.PS256, jose.EdDSA}

// AssertionCredential is an agent credential that mints, for every
// connection, a short-lived JWT signed with the agent's own private key. The
// relay checks it against the public key registered for the cluster
// ([AssertionAuthenticator]), so no shared secret exists anywhere.
type AssertionCredential struct {
	ClusterID string
	// Key is the agent's private key: ECDSA (P-256, P-384, P-521), RSA or
	// Ed25519.
	Key crypto.Signer
	// Audience is the aud claim, naming the one relay the assertion is
	// for; it must equal the relay's AssertionConfig.Audience. An Agent
	// sets it, when empty, to AssertionAudience of its RelayURL.
	Audience string
	// Lifetime of each assertion; default 2 minutes.
	Lifetime time.Duration
}

// Credential signs a fresh assertion.
func (c *AssertionCredential) Credential(context.Context) (string, error) {
	alg, err := signingAlgorithm(c.Key)
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: c.Key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("tunnel: assertion signer: %w", err)
	}
	now := time.Now()
	lifetime := c.Lifetime
	if lifetime <= 0 {
		lifetime = defaultAssertionLifetime
	}
	aud := c.Audience
	if aud == "" {
		return "", errors.New("tunnel: AssertionCredential.Audience is empty: set it to the relay's AssertionAudience (an Agent does this from its RelayURL)")
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("tunnel: %w", err)
	}
	claims := jwt.Claims{
		Issuer:    c.ClusterID,
		Subject:   c.ClusterID,
		Audience:  jwt.Audience{aud},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		Expiry:    jwt.NewNumericDate(now.Add(lifetime)),
		ID:        hex.EncodeToString(jti),
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("tunnel: signing assertion: %w", err)
	}
	return tok, nil
}

func signingAlgorithm(key crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
	case *rsa.PrivateKey:
		return jose.RS256, nil
	case ed25519.PrivateKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("tunnel: unsupported agent key type %T (use ECDSA, RSA or Ed25519)", key)
}

// AssertionConfig configures an AssertionAuthenticator.
type AssertionConfig struct {
	// Keys maps each cluster ID to the public keys allowed to sign for it
	// (several during a key rotation).
	Keys map[string][]crypto.PublicKey
	// Audience the assertions must carry: the name of this relay, normally
	// AssertionAudience of its public URL. Required: without it an
	// assertion made for one relay would be good at every relay.
	Audience string
	// MaxLifetime is the longest exp − iat accepted; default 10 minutes.
	MaxLifetime time.Duration
	// Leeway for clock skew on exp, nbf and iat; default 30 seconds.
	Leeway time.Duration
	// Replays, if set, is a replay cache a fleet's replicas share, so an
	// assertion used at one is refused at every other. The relay's own
	// memory is checked first either way; when the shared cache cannot
	// be reached the assertion is judged by that memory alone (logged),
	// so agents can still reconnect while the store is away.
	Replays ReplayCache
	// Logger receives shared replay cache failures; nil discards them.
	Logger *slog.Logger
}

// ReplayCache records assertion IDs for a fleet's replicas together.
type ReplayCache interface {
	// Claim records key until the given time and reports whether it was
	// new: false if any replica claimed it before.
	Claim(ctx context.Context, key string, until time.Time) (bool, error)
}

// AssertionAuthenticator checks agents' signed assertions: signature by a
// key registered for the requested cluster, iss and sub equal to that
// cluster ID, audience, expiry, a bounded lifetime, and a jti never seen
// before (a captured assertion cannot be replayed, even before it expires).
type AssertionAuthenticator struct {
	keys        atomic.Pointer[map[string][]crypto.PublicKey]
	audience    string
	maxLifetime time.Duration
	leeway      time.Duration
	now         func() time.Time
	replays     ReplayCache
	log         *slog.Logger

	mu        sync.Mutex
	seen      map[string]time.Time // cluster ID + jti → when it may be forgotten
	nextPrune int
}

// NewAssertionAuthenticator returns an authenticator for cfg.
func NewAssertionAuthenticator(cfg AssertionConfig) (*AssertionAuthenticator, error) {
	a := &AssertionAuthenticator{
		audience:    cfg.Audience,
		maxLifetime: cfg.MaxLifetime,
		leeway:      cfg.Leeway,
		now:         time.Now,
		replays:     cfg.Replays,
		log:         logx.OrDiscard(cfg.Logger),
		seen:        map[string]time.Time{},
		nextPrune:   1024,
	}
	if a.audience == "" {
		return nil, errors.New("tunnel: AssertionConfig.Audience is required: the relay's own name, AssertionAudience(its public URL), so that assertions made for another relay are refused")
	}
	if a.maxLifetime <= 0 {
		a.maxLifetime = defaultMaxAssertionLifetime
	}
	if a.leeway <= 0 {
		a.leeway = defaultAssertionLeeway
	}
	if err := a.SetKeys(cfg.Keys); err != nil {
		return nil, err
	}
	return a, nil
}

// SetKeys replaces the clusters and their keys, for the next handshake;
// the assertions seen so far stay remembered, so a reload opens no window
// for replays. On error nothing changes.
func (a *AssertionAuthenticator) SetKeys(keys map[string][]crypto.PublicKey) error {
	m := make(map[string][]crypto.PublicKey, len(keys))
	for id, ks := range keys {
		if err := ValidateClusterID(id); err != nil {
			return err
		}
		for _, k := range ks {
			switch k.(type) {
			case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
			default:
				return fmt.Errorf("tunnel: cluster %s: unsupported public key type %T", id, k)
			}
		}
		m[id] = append([]crypto.PublicKey(nil), ks...)
	}
	a.keys.Store(&m)
	return nil
}

// Authenticate verifies an assertion for clusterID.
func (a *AssertionAuthenticator) Authenticate(ctx context.Context, clusterID, credential string) error {
	keys, ok := (*a.keys.Load())[clusterID]
	if !ok {
		return &AuthError{Reason: "unknown-cluster"}
	}
	tok, err := jwt.ParseSigned(credential, assertionAlgorithms)
	if err != nil {
		return &AuthError{Reason: "malformed", Err: errors.New("not a compact JWS with an accepted algorithm")}
	}
	var claims jwt.Claims
	verified := false
	for _, k := range keys {
		if tok.Claims(k, &claims) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return &AuthError{Reason: "bad-signature", Err: errors.New("not signed by a key registered for this cluster")}
	}
	now := a.now()
	switch {
	case claims.Subject != clusterID || claims.Issuer != clusterID:
		return &AuthError{Reason: "wrong-cluster", Err: fmt.Errorf("assertion is for cluster %q", claims.Subject)}
	case !claims.Audience.Contains(a.audience):
		return &AuthError{Reason: "wrong-audience", Err: fmt.Errorf("assertion is for %q, this relay is %q: the agent's relay URL (or assertion audience) names another relay", truncateAll(claims.Audience), a.audience)}
	case claims.Expiry == nil || claims.IssuedAt == nil || claims.ID == "":
		return &AuthError{Reason: "malformed", Err: errors.New("exp, iat and jti are required")}
	case now.After(claims.Expiry.Time().Add(a.leeway)):
		return &AuthError{Reason: "expired", Err: fmt.Errorf("expired at %s", claims.Expiry.Time().UTC().Format(time.RFC3339))}
	case claims.NotBefore != nil && now.Add(a.leeway).Before(claims.NotBefore.Time()),
		now.Add(a.leeway).Before(claims.IssuedAt.Time()):
		return &AuthError{Reason: "not-yet-valid", Err: errors.New("issued in the future: check the agent's clock")}
	case claims.Expiry.Time().Sub(claims.IssuedAt.Time()) > a.maxLifetime:
		return &AuthError{Reason: "lifetime-too-long", Err: fmt.Errorf("lifetime over %s", a.maxLifetime)}
	}
	until := claims.Expiry.Time().Add(a.leeway)
	if err := a.remember(clusterID+"\x00"+claims.ID, until, now); err != nil || a.replays == nil {
		return err
	}
	sum := sha256.Sum256([]byte(claims.ID))
	fresh, err := a.replays.Claim(ctx, clusterID+"/"+hex.EncodeToString(sum[:]), until)
	switch {
	case err != nil:
		a.log.Warn("shared replay cache unavailable; judging the assertion by this relay's memory alone", "cluster", clusterID, "err", err)
	case !fresh:
		return &AuthError{Reason: "replayed", Err: errors.New("this assertion was already used at another relay replica")}
	}
	return nil
}

// remember records a jti until it could no longer pass the expiry check,
// and fails if it was seen before.
func (a *AssertionAuthenticator) remember(key string, until, now time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, dup := a.seen[key]; dup {
		return &AuthError{Reason: "replayed", Err: errors.New("this assertion was already used")}
	}
	if len(a.seen) >= a.nextPrune {
		for k, t := range a.seen {
			if now.After(t) {
				delete(a.seen, k)
			}
		}
		a.nextPrune = max(1024, 2*len(a.seen))
	}
	if len(a.seen) >= maxReplayEntries {
		return &AuthError{Reason: "replay-cache-full", Err: errors.New("too many live assertions; retry later")}
	}
	a.seen[key] = until
	return nil
}

// truncateAll shortens what an untrusted assertion says, for a log line.
func truncateAll(xs []string) []string {
	out := make([]string, 0, min(len(xs), 3))
	for _, x := range xs[:min(len(xs), 3)] {
		if len(x) > 100 {
			x = x[:100] + "…"
		}
		out = append(out, x)
	}
	return out
}
