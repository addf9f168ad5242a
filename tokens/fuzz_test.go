package tokens_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

var sentinels = []error{
	tokens.ErrMalformed, tokens.ErrAlgorithm, tokens.ErrIssuer, tokens.ErrAudience, tokens.ErrTenant,
	tokens.ErrExpired, tokens.ErrNotYetValid, tokens.ErrMissingClaim, tokens.ErrUnknownKey,
	tokens.ErrSignature, tokens.ErrKeySet,
}

// FuzzVerify: whatever arrives as a bearer token, Verify does not panic,
// accepts nothing it should not, and reports a known kind of error that does
// not repeat the token.
func FuzzVerify(f *testing.F) {
	s := newSetup(f, func(c *tokens.Config) { c.CacheSize = -1 })
	good := s.token(f, s.claims(2))
	key := s.is.SigningKey()
	claims := s.claims(2).Map()
	f.Add(good)
	f.Add(s.token(f, s.claims(1)))
	f.Add(oidctest.AlgNone(claims))
	f.Add(oidctest.Unsigned(key, claims))
	if hs, err := oidctest.HS256WithPublicKey(key, claims); err == nil {
		f.Add(hs)
	}
	if tampered, err := oidctest.Tamper(good, "aud", []string{clientID, "x"}); err == nil {
		f.Add(tampered)
	}
	f.Add("eyJhbGciOiJSUzI1NiJ9.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := s.v.Verify(context.Background(), raw)
		if err == nil {
			// Only tokens the issuer signed pass (base64 padding bits aside).
			if tok.Issuer == "" || tok.Expiry.IsZero() || tok.TenantID != tenantA {
				t.Fatalf("accepted a token without issuer, expiry or the right tenant")
			}
			return
		}
		known := false
		for _, s := range sentinels {
			known = known || errors.Is(err, s)
		}
		if !known {
			t.Fatalf("error of no known kind: %v", err)
		}
		if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
			t.Fatalf("error repeats the token: %v", err)
		}
	})
}

// FuzzVerifyPoP: whatever arrives as a PoP token, Verify does not panic,
// accepts only a PoP token that verifies in full (then only once), and
// reports a known kind of error that does not repeat the token.
func FuzzVerifyPoP(f *testing.F) {
	s := newSetup(f, func(c *tokens.Config) { c.CacheSize = -1; c.PoP = &tokens.PoPConfig{Hosts: []string{clusterHost}} })
	key, err := oidctest.NewPoPKey(0)
	if err != nil {
		f.Fatal(err)
	}
	c := s.claims(2)
	c.Extra = map[string]any{"cnf": key.Cnf()}
	at := s.token(f, c)
	for _, pc := range []oidctest.PoPClaims{
		{AccessToken: at, Host: clusterHost, Time: s.clock.now(), Nonce: "seed"},
		{AccessToken: at, Host: "elsewhere", Time: s.clock.now()},
		{AccessToken: at, Host: clusterHost, Time: s.clock.now(), Extra: map[string]any{"ts": "soon", "cnf": map[string]any{"jwk": "x"}}},
		{AccessToken: "", Host: clusterHost, Extra: map[string]any{"cnf": nil}},
	} {
		tok, err := key.Sign(pc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
	}
	f.Add(`eyJhbGciOiJSUzI1NiIsInR5cCI6InBvcCJ9.e30.`)
	popSentinels := append([]error{tokens.ErrPoP, tokens.ErrPoPSignature, tokens.ErrPoPStale, tokens.ErrPoPHost,
		tokens.ErrPoPBinding, tokens.ErrPoPReplayed}, sentinels...)
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := s.v.Verify(context.Background(), raw)
		if err == nil {
			if tok.StringClaim("oid") != "oid-alice" {
				t.Fatalf("accepted a token that is not the issuer's")
			}
			if _, err := s.v.Verify(context.Background(), raw); err == nil && isPoPToken(raw) {
				t.Fatalf("accepted a PoP token twice")
			}
			return
		}
		known := false
		for _, s := range popSentinels {
			known = known || errors.Is(err, s)
		}
		if !known {
			t.Fatalf("error of no known kind: %v", err)
		}
		if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
			t.Fatalf("error repeats the token: %v", err)
		}
	})
}

// isPoPToken reports whether raw's header says typ pop.
func isPoPToken(raw string) bool {
	h, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	return err == nil && strings.Contains(strings.ToLower(string(b)), `"typ":"pop"`)
}
