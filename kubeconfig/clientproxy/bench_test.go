package clientproxy_test

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkRequest sends small GETs through the client proxy to a
// stand-in relay, 32 at a time, as kubectl's discovery and lists do: what
// the proxy costs per request on the user's machine.
func BenchmarkRequest(b *testing.B) {
	rp := start(b, newRelay(b), nil)
	client := rp.client()
	b.ReportAllocs()
	b.SetParallelism(16) // 32 concurrent clients on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(rp.url + "/api")
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
