package source_test

import (
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// BenchmarkDiskCacheHit is what each kubectl call's exec plugin pays for
// a cached token: a read of the cache file and its JSON, no lock.
func BenchmarkDiskCacheHit(b *testing.B) {
	f := &counting{expiry: time.Hour}
	cache := &source.DiskCache{Dir: b.TempDir()}
	if _, err := cache.TokenSource("k", f).Token(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cache.TokenSource("k", f).Token(); err != nil {
			b.Fatal(err)
		}
	}
	if f.n != 1 {
		b.Fatalf("%d fetches, want 1", f.n)
	}
}
