package tokens_test

import (
	"context"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/clusterconnect/clusterconnect/tokens"
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
