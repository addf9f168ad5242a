package tokens_test

import (
	"context"
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
