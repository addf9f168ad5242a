package tokens_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// BenchmarkVerify: a typical Entra v2 access token (~1 KiB) with the key set
// already fetched. "bare-go-jose" is the RS256 parse and signature check
// alone, the floor for "uncached".
func BenchmarkVerify(b *testing.B) {
	for _, mode := range []struct {
		name  string
		cache int
	}{{"cached", 0}, {"uncached", -1}} {
		b.Run(mode.name, func(b *testing.B) {
			s := newSetup(b, func(c *tokens.Config) { c.CacheSize = mode.cache })
			raw := s.token(b, s.claims(2))
			if _, err := s.v.Verify(context.Background(), raw); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.v.Verify(context.Background(), raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("bare-go-jose", func(b *testing.B) {
		s := newSetup(b, nil)
		raw := s.token(b, s.claims(2))
		pub := s.is.SigningKey().Private.Public()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := jws.Verify(pub); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifyPoP: a PoP token around a cached access token, each one
// fresh (a PoP token is taken once): the PoP signature with the key it
// carries, the thumbprint binding and the replay cache, on top of
// Verify/cached. Signing is outside the timer.
func BenchmarkVerifyPoP(b *testing.B) {
	s := newSetup(b, func(c *tokens.Config) {
		c.PoP = &tokens.PoPConfig{Hosts: []string{clusterHost}, ReplayCacheSize: 1 << 20}
	})
	key, err := oidctest.NewPoPKey(0)
	if err != nil {
		b.Fatal(err)
	}
	c := s.claims(2)
	c.Extra = map[string]any{"cnf": key.Cnf()}
	at := s.token(b, c)
	sign := func(i int) string {
		tok, err := key.Sign(oidctest.PoPClaims{AccessToken: at, Host: clusterHost, Time: s.clock.now(), Nonce: strconv.Itoa(i)})
		if err != nil {
			b.Fatal(err)
		}
		return tok
	}
	if _, err := s.v.Verify(context.Background(), sign(-1)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		tok := sign(i)
		i++
		b.StartTimer()
		if _, err := s.v.Verify(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
	}
}
