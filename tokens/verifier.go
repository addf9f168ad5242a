package tokens

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/clusterconnect/clusterconnect/internal/logx"
)

// MaxTokenSize bounds the tokens Verify looks at. Entra ID access tokens
// with many claims stay well under it.
const MaxTokenSize = 64 << 10

// Token is a verified token's claims.
type Token struct {
	Issuer    string
	Subject   string
	Audience  []string
	TenantID  string // tid, for Entra ID tokens
	Expiry    time.Time
	IssuedAt  time.Time // zero if absent
	NotBefore time.Time // zero if absent
	// Claims holds every claim; numbers are json.Number.
	Claims map[string]any
}

// StringClaim returns a claim that is a string, or "".
func (t *Token) StringClaim(name string) string {
	s, _ := t.Claims[name].(string)
	return s
}

// Verifier checks bearer tokens against trusted issuers. It is safe for
// concurrent use; create one and share it.
type Verifier struct {
	algs    []jose.SignatureAlgorithm
	allowed map[string]bool
	issuers map[string]*issuer
	skew    time.Duration
	require map[string]string
	cache   *cache
	negTTL  time.Duration
	now     func() time.Time
	metrics *metrics // nil without Config.Registerer
	pop     *pop     // nil without Config.PoP
}

type issuer struct {
	Issuer
	keys      *keySet
	audiences map[string]bool
	tenants   map[string]bool
}

// NewVerifier checks cfg and returns a verifier. It fetches nothing: key
// sets are fetched on first use.
func NewVerifier(cfg *Config) (*Verifier, error) {
	if cfg == nil {
		return nil, errors.New("tokens: nil Config")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v := &Verifier{
		allowed: map[string]bool{},
		issuers: map[string]*issuer{},
		skew:    cfg.ClockSkew,
		require: cfg.RequiredClaims,
		cache:   newCache(orInt(cfg.CacheSize, 10000)),
		negTTL:  cfg.NegativeCacheTTL,
		now:     cfg.Now,
	}
	if v.skew <= 0 {
		v.skew = time.Minute
	}
	if v.negTTL <= 0 {
		v.negTTL = 10 * time.Second
	}
	if v.now == nil {
		v.now = time.Now
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = []string{"RS256"}
	}
	for _, a := range algs {
		v.allowed[a] = true
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: fetchTimeout}
	}
	minInterval := cfg.MinRefreshInterval
	if minInterval <= 0 {
		minInterval = time.Minute
	}
	refreshWait := cfg.RefreshWait
	if refreshWait <= 0 {
		refreshWait = DefaultRefreshWait
	}
	log := logx.OrDiscard(cfg.Logger)
	var err error
	if v.pop, err = newPoP(cfg.PoP); err != nil {
		return nil, err
	}
	if v.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("tokens: registering metrics: %w", err)
	}
	for _, is := range cfg.Issuers {
		st := &issuer{Issuer: is, audiences: set(is.Audiences), tenants: set(is.TenantIDs)}
		st.keys = &keySet{issuer: is, client: client, minInterval: minInterval, refreshWait: refreshWait, now: v.now, log: log, episodes: logx.NewEpisodes(log, 0), metrics: v.metrics}
		v.issuers[is.URL] = st
	}
	return v, nil
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func set(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// Verify checks a bearer token: size and form, an allowed algorithm and
// exactly one signature, then the claims (issuer, audience, token version,
// tenant, exp, nbf, iat, required claims) before any key is fetched, then
// the signature with the issuer's key named by kid. Results are cached by
// an HMAC of the token: a valid token until it expires or until a key-set
// refresh shows that the issuer withdrew the key that signed it, a rejected
// one briefly.
//
// With Config.PoP, a proof-of-possession token (header typ "pop") is
// verified as such, and the access token inside it as above; the Token
// returned is the access token's.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Token, error) {
	var tok *Token
	var err error
	switch {
	case v.pop == nil:
		// The common case costs no look at the header: a PoP token fails
		// the ordinary checks, and only then is told apart.
		if tok, err = v.verifyCached(ctx, raw); err != nil && isPoP(raw) {
			err = claimError(ErrPoP, "proof-of-possession tokens are not enabled here")
		}
	case !isPoP(raw) && v.pop.require:
		err = claimError(ErrPoPRequired, "sign in with PoP enabled (kubelogin --pop-enabled --pop-claims u=<cluster>)")
	case !isPoP(raw):
		tok, err = v.verifyCached(ctx, raw)
	case len(raw) > MaxTokenSize+maxPoPOverhead:
		err = claimError(ErrPoP, "PoP token of %d bytes is over the limit", len(raw))
	default:
		tok, err = v.verifyPoP(ctx, raw)
	}
	v.metrics.verified(err)
	return tok, err
}

func (v *Verifier) verifyCached(ctx context.Context, raw string) (*Token, error) {
	if raw == "" {
		return nil, claimError(ErrMalformed, "empty token")
	}
	if len(raw) > MaxTokenSize {
		return nil, claimError(ErrMalformed, "token of %d bytes is over the %d-byte limit", len(raw), MaxTokenSize)
	}
	now := v.now()
	if v.cache == nil {
		tok, _, err := v.verify(ctx, raw, now)
		return tok, err
	}
	key := v.cache.key(raw)
	if e, ok := v.cache.get(key, now); ok && (e.err != nil || e.signer.keys.holds(e.signer.thumbprint)) {
		return e.tok, e.err
	}
	tok, signer, err := v.verify(ctx, raw, now)
	switch {
	case err == nil:
		v.cache.put(key, cacheEntry{tok: tok, signer: signer, until: tok.Expiry})
	case errors.Is(err, ErrKeySet), errors.Is(err, ErrUnknownKey), ctx.Err() != nil:
		// The issuer's trouble, or a key it may publish any moment: look
		// again next time.
	default:
		v.cache.put(key, cacheEntry{err: err, until: now.Add(v.negTTL)})
	}
	return tok, err
}

type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// signer names the key that verified a token, so that a cached result can
// be dropped once the issuer withdraws that key.
type signer struct {
	keys       *keySet
	thumbprint string
}

func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*Token, signer, error) {
	var none signer
	h, err := parseHeader(raw)
	if err != nil {
		return nil, none, err
	}
	if !v.allowed[h.Alg] {
		name := "an unknown algorithm"
		if allowedAlgorithms[h.Alg] || h.Alg == "none" || strings.HasPrefix(h.Alg, "HS") && len(h.Alg) == 5 {
			name = h.Alg
		}
		return nil, none, claimError(ErrAlgorithm, "the token is signed with %s", name)
	}
	jws, err := jose.ParseSignedCompact(raw, v.algs)
	if err != nil {
		return nil, none, claimError(ErrMalformed, "not a compact JWS")
	}
	tok, err := decodeClaims(jws.UnsafePayloadWithoutVerification())
	if err != nil {
		return nil, none, err
	}
	is, err := v.checkClaims(tok, now)
	if err != nil {
		return nil, none, err
	}
	key, err := is.keys.key(ctx, h.Kid)
	if err != nil {
		return nil, none, err
	}
	if key.Algorithm != "" && key.Algorithm != h.Alg {
		return nil, none, claimError(ErrSignature, "key %q is for %s, the token says %s", key.KeyID, key.Algorithm, h.Alg)
	}
	if _, err := jws.Verify(&key.JSONWebKey); err != nil {
		return nil, none, claimError(ErrSignature, "signature does not verify with key %q of %s", key.KeyID, is.URL)
	}
	return tok, signer{keys: is.keys, thumbprint: key.thumbprint}, nil
}

func parseHeader(raw string) (header, error) {
	var h header
	enc, rest, ok := strings.Cut(raw, ".")
	if !ok || strings.Count(rest, ".") != 1 {
		return h, claimError(ErrMalformed, "not three dot-separated parts")
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return h, claimError(ErrMalformed, "header is not base64url")
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, claimError(ErrMalformed, "header is not a JSON object")
	}
	return h, nil
}

// decodeClaims reads the standard claims, keeping all claims in Claims.
func decodeClaims(payload []byte) (*Token, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, claimError(ErrMalformed, "claims are not a JSON object")
	}
	tok := &Token{Claims: claims}
	var ok bool
	if tok.Issuer, ok = optString(claims, "iss"); !ok {
		return nil, claimError(ErrMalformed, "iss is not a string")
	}
	if tok.Subject, ok = optString(claims, "sub"); !ok {
		return nil, claimError(ErrMalformed, "sub is not a string")
	}
	if tok.TenantID, ok = optString(claims, "tid"); !ok {
		return nil, claimError(ErrMalformed, "tid is not a string")
	}
	switch aud := claims["aud"].(type) {
	case nil:
	case string:
		tok.Audience = []string{aud}
	case []any:
		for _, a := range aud {
			s, ok := a.(string)
			if !ok {
				return nil, claimError(ErrMalformed, "aud holds a non-string")
			}
			tok.Audience = append(tok.Audience, s)
		}
	default:
		return nil, claimError(ErrMalformed, "aud is neither a string nor a list")
	}
	for name, dst := range map[string]*time.Time{"exp": &tok.Expiry, "iat": &tok.IssuedAt, "nbf": &tok.NotBefore} {
		switch n := claims[name].(type) {
		case nil:
		case json.Number:
			f, err := n.Float64()
			if err != nil || f < 0 || f > 1<<40 {
				return nil, claimError(ErrMalformed, "%s is not a time", name)
			}
			*dst = time.Unix(int64(f), 0)
		default:
			return nil, claimError(ErrMalformed, "%s is not a number", name)
		}
	}
	return tok, nil
}

func optString(m map[string]any, name string) (string, bool) {
	switch v := m[name].(type) {
	case nil:
		return "", true
	case string:
		return v, true
	}
	return "", false
}

// checkClaims runs the checks that need no key, so that a token for the
// wrong issuer or audience, or an expired one, never causes a fetch.
func (v *Verifier) checkClaims(tok *Token, now time.Time) (*issuer, error) {
	is := v.issuers[tok.Issuer]
	if is == nil {
		return nil, claimError(ErrIssuer, "issuer %q is not trusted", truncate(tok.Issuer))
	}
	if !slices.ContainsFunc(tok.Audience, func(a string) bool { return is.audiences[a] }) {
		return nil, claimError(ErrAudience, "audience %q is not one of %q", truncateAll(tok.Audience), is.Audiences)
	}
	if is.TokenVersion != "" {
		if ver, _ := tok.Claims["ver"].(string); ver != is.TokenVersion {
			return nil, claimError(ErrVersion, "issuer %s issues version %s tokens, this one says ver %q", is.URL, is.TokenVersion, truncate(ver))
		}
	}
	if len(is.tenants) > 0 && !is.tenants[tok.TenantID] {
		return nil, claimError(ErrTenant, "tenant %q is not allowed for issuer %s", truncate(tok.TenantID), is.URL)
	}
	if tok.Expiry.IsZero() {
		return nil, claimError(ErrMissingClaim, "exp is required")
	}
	if now.After(tok.Expiry.Add(v.skew)) {
		return nil, &ExpiredError{Expiry: tok.Expiry}
	}
	if !tok.NotBefore.IsZero() && now.Add(v.skew).Before(tok.NotBefore) {
		return nil, claimError(ErrNotYetValid, "nbf is %s", tok.NotBefore.UTC().Format(time.RFC3339))
	}
	if !tok.IssuedAt.IsZero() && now.Add(v.skew).Before(tok.IssuedAt) {
		return nil, claimError(ErrNotYetValid, "iat is %s, in the future: check the clocks", tok.IssuedAt.UTC().Format(time.RFC3339))
	}
	for name, want := range v.require {
		if got, _ := tok.Claims[name].(string); got != want {
			return nil, claimError(ErrMissingClaim, "claim %s must be %q", name, want)
		}
	}
	return is, nil
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

func truncateAll(xs []string) []string {
	out := make([]string, 0, min(len(xs), 5))
	for _, x := range xs[:min(len(xs), 5)] {
		out = append(out, truncate(x))
	}
	return out
}

// Ready fetches any issuer's key set not fetched yet and reports whether
// every issuer has keys, for a readiness probe.
func (v *Verifier) Ready(ctx context.Context) error {
	var errs []error
	for _, is := range v.issuers {
		if is.keys.known() {
			continue
		}
		if !is.keys.mayFetch() {
			errs = append(errs, is.keys.unavailable())
			continue
		}
		if err := is.keys.refresh(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
