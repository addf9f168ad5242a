package tunnel_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// BenchmarkManyClusters sends requests to random clusters among 1, 100 and
// 1000 connected agents (one connection each): the cost per request must not
// grow with the number of clusters the relay holds.
func BenchmarkManyClusters(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			secrets := tunnel.SecretAuthenticator{}
			for i := range n {
				secrets[fmt.Sprintf("c%d", i)] = secret
			}
			h := newHarness(b, small, harnessOpts{auth: secrets, noAgent: true})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{}, n)
			for i := range n {
				a, err := tunnel.NewAgent(&tunnel.AgentConfig{
					RelayURL: h.srv.URL, ClusterID: fmt.Sprintf("c%d", i), Credential: tunnel.SecretCredential(secret),
					Handler: small, Connections: 1, TLSConfig: &tls.Config{RootCAs: h.roots, ServerName: "example.com"},
				})
				if err != nil {
					b.Fatal(err)
				}
				go func() { a.Run(ctx); done <- struct{}{} }()
			}
			b.Cleanup(func() {
				cancel()
				for range n {
					<-done
				}
			})
			deadline := time.Now().Add(time.Minute)
			for len(h.relay.Conns()) < n {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d agents connected", len(h.relay.Conns()), n)
				}
				time.Sleep(10 * time.Millisecond)
			}
			client := h.client()
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(fmt.Sprintf("%s/clusters/c%d/api", h.srv.URL, rand.IntN(n)))
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		})
	}
}
