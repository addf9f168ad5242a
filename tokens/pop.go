package tokens

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Proof-of-possession (PoP) tokens: the signed HTTP request tokens Entra ID
// clients make for Azure Arc's cluster connect (kubelogin --pop-enabled
// --pop-claims "u=<cluster>"). The bearer token is a JWT of type "pop",
// signed by a key the client holds, whose claims carry
//
//	at     the access token, issued for that key (its cnf claim names the
//	       key's RFC 7638 thumbprint: {"cnf": {"kid": "…"}})
//	ts     when the client signed it
//	u      the host or resource it is for
//	cnf    {"jwk": the client's public key}
//	m, p, nonce (optional) the method, path and a nonce
//
// A stolen PoP token is good for one cluster, for minutes, once; a stolen
// access token alone is good for nothing.

// PoPConfig turns on PoP tokens. The access token inside is verified as any
// other token is.
type PoPConfig struct {
	// Hosts are the values the u claim may take: this cluster's host
	// name or ID (for Arc, the cluster's ARM resource ID). Compared
	// without regard to case. Required.
	Hosts []string
	// MaxAge is how long after its ts a PoP token is accepted; default
	// DefaultPoPMaxAge. A ts more than the clock skew in the future is
	// refused too.
	MaxAge time.Duration
	// ReplayCacheSize bounds how many PoP tokens are remembered to refuse
	// their reuse; default DefaultPoPReplayCacheSize. Only tokens that
	// verified are remembered, each until it is too old to be accepted; when
	// the cache is full of live ones, new PoP tokens are refused (fail
	// closed) until some age out.
	ReplayCacheSize int
	// Required refuses tokens that are not PoP tokens.
	Required bool
}

// PoP defaults.
const (
	DefaultPoPMaxAge          = 15 * time.Minute
	DefaultPoPReplayCacheSize = 100_000
	// minPoPKeyBits and maxPoPKeyBits bound the client's key: strong
	// enough, and not so large that a caller makes each check costly.
	minPoPKeyBits = 2048
	maxPoPKeyBits = 4096
	// maxPoPOverhead is what a PoP token may add to its access token's
	// MaxTokenSize: the client's key, the other claims, the signature.
	maxPoPOverhead = 8 << 10
)

// popClaims are the claims of a PoP token.
type popClaims struct {
	At    string          `json:"at"`
	Ts    json.Number     `json:"ts"`
	U     string          `json:"u"`
	M     string          `json:"m"`
	P     string          `json:"p"`
	Nonce string          `json:"nonce"`
	Cnf   json.RawMessage `json:"cnf"`
}

// pop is a Verifier's PoP state.
type pop struct {
	hosts   []string
	maxAge  time.Duration
	require bool
	seen    *replayCache
}

func newPoP(c *PoPConfig) (*pop, error) {
	if c == nil {
		return nil, nil
	}
	if len(c.Hosts) == 0 {
		return nil, claimError(ErrPoP, "PoPConfig.Hosts is required: the u claim this cluster accepts")
	}
	p := &pop{hosts: c.Hosts, maxAge: c.MaxAge, require: c.Required}
	if p.maxAge <= 0 {
		p.maxAge = DefaultPoPMaxAge
	}
	size := c.ReplayCacheSize
	if size <= 0 {
		size = DefaultPoPReplayCacheSize
	}
	p.seen = &replayCache{max: size, until: map[[32]byte]time.Time{}}
	return p, nil
}

// isPoP reports whether raw's header says it is a PoP token.
func isPoP(raw string) bool {
	h, err := parseHeader(raw)
	return err == nil && strings.EqualFold(h.Typ, "pop")
}

// verifyPoP verifies a PoP token and the access token inside, and returns
// the access token's claims.
func (v *Verifier) verifyPoP(ctx context.Context, raw string) (*Token, error) {
	now := v.now()
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, claimError(ErrPoP, "not a compact JWS signed with RS256")
	}
	var c popClaims
	dec := json.NewDecoder(strings.NewReader(string(jws.UnsafePayloadWithoutVerification())))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		return nil, claimError(ErrPoP, "claims are not a JSON object of the PoP shape")
	}
	var cnf struct {
		JWK json.RawMessage `json:"jwk"`
	}
	if len(c.Cnf) == 0 || json.Unmarshal(c.Cnf, &cnf) != nil || len(cnf.JWK) == 0 {
		return nil, claimError(ErrPoP, "cnf.jwk, the client's key, is missing")
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(cnf.JWK); err != nil {
		return nil, claimError(ErrPoP, "cnf.jwk is not a JSON Web Key")
	}
	pub, ok := key.Key.(*rsa.PublicKey)
	if !ok || !key.IsPublic() || pub.N.BitLen() < minPoPKeyBits || pub.N.BitLen() > maxPoPKeyBits {
		return nil, claimError(ErrPoP, "cnf.jwk must be an RSA public key of %d to %d bits", minPoPKeyBits, maxPoPKeyBits)
	}
	// The cheap checks first: anyone can send a PoP token with a key of
	// their own, and only then the signature costs an RSA operation.
	ts, err := c.Ts.Int64()
	if err != nil {
		return nil, claimError(ErrPoP, "ts is not a number")
	}
	signed := time.Unix(ts, 0)
	switch {
	case now.Sub(signed) > v.pop.maxAge:
		return nil, claimError(ErrPoPStale, "signed at %s, more than %s ago", signed.UTC().Format(time.RFC3339), v.pop.maxAge)
	case signed.Sub(now) > v.skew:
		return nil, claimError(ErrPoPStale, "signed at %s, in the future", signed.UTC().Format(time.RFC3339))
	}
	if !v.pop.hostAllowed(c.U) {
		return nil, claimError(ErrPoPHost, "u is %q, not this cluster", c.U)
	}
	if _, err := jws.Verify(pub); err != nil {
		return nil, claimError(ErrPoPSignature, "the PoP token is not signed by the key it carries")
	}
	if c.At == "" || isPoP(c.At) {
		return nil, claimError(ErrPoP, "at, the access token, is missing")
	}
	tok, err := v.verifyCached(ctx, c.At)
	if err != nil {
		return nil, err
	}
	thumb, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, claimError(ErrPoP, "cnf.jwk has no thumbprint")
	}
	var bound struct {
		Kid string `json:"kid"`
	}
	atCnf, _ := tok.Claims["cnf"].(map[string]any)
	bound.Kid, _ = atCnf["kid"].(string)
	if bound.Kid == "" {
		return nil, claimError(ErrPoPBinding, "the access token is not bound to a key (no cnf.kid): it was not issued for PoP")
	}
	if bound.Kid != base64.RawURLEncoding.EncodeToString(thumb) {
		return nil, claimError(ErrPoPBinding, "the access token is bound to another key than the one that signed the PoP token")
	}
	// Last: only tokens that passed everything are remembered, so that
	// nobody fills the cache with forgeries.
	if err := v.pop.seen.claim(sha256.Sum256([]byte(raw)), signed.Add(v.pop.maxAge+v.skew), now); err != nil {
		return nil, err
	}
	return tok, nil
}

func (p *pop) hostAllowed(u string) bool {
	for _, h := range p.hosts {
		if u != "" && strings.EqualFold(u, h) {
			return true
		}
	}
	return false
}

// replayCache remembers PoP tokens until they are too old to be accepted.
type replayCache struct {
	mu    sync.Mutex
	max   int
	until map[[32]byte]time.Time
}

// claim records key until its expiry, and fails if it was recorded
// already or the cache is full of live entries.
func (r *replayCache) claim(key [32]byte, expires, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.until[key]; ok && now.Before(t) {
		return claimError(ErrPoPReplayed, "this PoP token was used already: sign a new one for each request")
	}
	if len(r.until) >= r.max {
		for k, t := range r.until {
			if !now.Before(t) {
				delete(r.until, k)
			}
		}
		if len(r.until) >= r.max {
			return claimError(ErrPoPReplayed, "too many PoP tokens in flight to remember another; retry shortly")
		}
	}
	r.until[key] = expires
	return nil
}
