package tunnel_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// The same handler served directly over TLS and through relay and agent:
// compare the two with benchstat or by the ratio of their ns/op. It
// answers as kube-apiserver does, naming the request's audit ID: the one
// it was sent, or one of its own.
var small = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("Audit-Id")
	if id == "" {
		id = fmt.Sprintf("0b0e7a52-7f43-4b4f-9a57-%012x", auditIDs.Add(1))
	}
	w.Header().Set("Audit-Id", id)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"kind":"Status","status":"Success"}`)
})

var auditIDs atomic.Uint64

const largeSize = 256 << 20

var large = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	buf := make([]byte, 256<<10)
	for n := 0; n < largeSize; n += len(buf) {
		if _, err := w.Write(buf); err != nil {
			return
		}
	}
})

// target is where a benchmark sends requests: base URL and client.
type target struct {
	url    string
	client *http.Client
}

func direct(b *testing.B, h http.Handler) target {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = quietLog // clients closing idle connections are not news
	srv.EnableHTTP2 = true
	srv.StartTLS()
	b.Cleanup(srv.Close)
	return target{srv.URL, srv.Client()}
}

func tunneled(b *testing.B, h http.Handler) target {
	hs := newHarness(b, h, harnessOpts{})
	return target{hs.url(""), hs.client()}
}

// throughReplica is tunneled with one more hop: the client reaches a
// replica of a fleet that holds no connection for the cluster, which
// forwards to the replica that does.
func throughReplica(b *testing.B, h http.Handler) target {
	dir, fleet := &memDirectory{}, newPeerPKI(b, "fleet peer CA")
	a, _ := startReplica(b, dir, fleet, fleet, nil, harnessOpts{noAgent: true})
	startReplica(b, dir, fleet, fleet, h, harnessOpts{})
	return target{a.url(""), a.client()}
}

// tunneledWithMetrics is tunneled with Prometheus metrics on both sides.
func tunneledWithMetrics(b *testing.B, h http.Handler) target {
	hs := newHarness(b, h, harnessOpts{
		relayCfg: func(c *tunnel.RelayConfig) { c.Registerer = prometheus.NewRegistry() },
		agentCfg: func(c *tunnel.AgentConfig) { c.Registerer = prometheus.NewRegistry() },
	})
	return target{hs.url(""), hs.client()}
}

// tunneledWithMiddleware is tunneled with a RelayConfig.Middleware that
// passes requests on: what the hook itself costs (package sessions
// measures its own).
func tunneledWithMiddleware(b *testing.B, h http.Handler) target {
	hs := newHarness(b, h, harnessOpts{
		relayCfg: func(c *tunnel.RelayConfig) {
			c.Middleware = func(next http.RoundTripper) http.RoundTripper { return next }
		},
	})
	return target{hs.url(""), hs.client()}
}

// tunneledWithAuthorizer is tunneled with a ClientAuthorizer that lets
// everything in: what the front door's hook costs the relay, the means
// to end a request later (EndRequest) included.
func tunneledWithAuthorizer(b *testing.B, h http.Handler) target {
	hs := newHarness(b, h, harnessOpts{
		relayCfg: func(c *tunnel.RelayConfig) {
			c.ClientAuthorizer = tunnel.ClientAuthorizerFunc(func(*http.Request, string) error { return nil })
		},
	})
	return target{hs.url(""), hs.client()}
}

func getAll(b *testing.B, t target, path string) int64 {
	resp, err := t.client.Get(t.url + path)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	return n
}

func BenchmarkSmallRequest(b *testing.B) {
	for _, mode := range []struct {
		name  string
		setup func(*testing.B, http.Handler) target
	}{{"direct", direct}, {"tunnel", tunneled}, {"tunnel-metrics", tunneledWithMetrics}, {"tunnel-middleware", tunneledWithMiddleware},
		{"tunnel-authorizer", tunneledWithAuthorizer}, {"replica", throughReplica}} {
		b.Run(mode.name, func(b *testing.B) {
			t := mode.setup(b, small)
			b.ReportAllocs()
			b.SetParallelism(16) // 32 concurrent clients on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					getAll(b, t, "/api/v1/namespaces/default/pods/p")
				}
			})
		})
	}
}

// BenchmarkSmallWrite sends small POSTs, as kubectl create and apply do:
// a request body crosses the tunnel too.
func BenchmarkSmallWrite(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		small(w, r)
	})
	body := strings.Repeat(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"x"}}`, 4)
	for _, mode := range []struct {
		name  string
		setup func(*testing.B, http.Handler) target
	}{{"direct", direct}, {"tunnel", tunneled}} {
		b.Run(mode.name, func(b *testing.B) {
			t := mode.setup(b, h)
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := t.client.Post(t.url+"/api/v1/namespaces/default/configmaps", "application/json", strings.NewReader(body))
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
		})
	}
}

// BenchmarkLargeDownload downloads 256 MiB, with the client speaking
// HTTP/1.1 or HTTP/2 to the server (direct), to the relay (tunnel), or to
// a replica that forwards to the relay holding the cluster (replica). The
// tunnel between relay and agent, and the hop between replicas, are
// always HTTP/2 over TLS.
func BenchmarkLargeDownload(b *testing.B) {
	largeTransfers(b, large, []mode{{"direct", direct}, {"tunnel", tunneled}, {"replica", throughReplica}}, func(b *testing.B, t target) {
		if n := getAll(b, t, "/big"); n != largeSize {
			b.Fatalf("got %d bytes", n)
		}
	})
}

// BenchmarkLargeUpload uploads 256 MiB (kubectl cp into a pod, exec -i),
// the client speaking HTTP/1.1 or HTTP/2 to the server (direct) or to the
// relay (tunnel); the server reads the body and drops it.
func BenchmarkLargeUpload(b *testing.B) {
	drop := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	largeTransfers(b, drop, []mode{{"direct", direct}, {"tunnel", tunneled}}, func(b *testing.B, t target) {
		resp, err := t.client.Post(t.url+"/up", "application/octet-stream", io.LimitReader(unwritten{}, largeSize))
		if err != nil {
			b.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != strconv.Itoa(largeSize) {
			b.Fatalf("the server read %s bytes", got)
		}
	})
}

// mode is a way to reach a handler: directly, through the tunnel, or
// through a replica too.
type mode struct {
	name  string
	setup func(*testing.B, http.Handler) target
}

// largeTransfers runs transfer, which moves largeSize bytes, for each
// mode of reaching h with the client speaking HTTP/1.1 and HTTP/2.
func largeTransfers(b *testing.B, h http.Handler, modes []mode, transfer func(*testing.B, target)) {
	for _, m := range modes {
		for _, proto := range []string{"h1", "h2"} {
			b.Run(m.name+"-"+proto, func(b *testing.B) {
				t := m.setup(b, h)
				if proto == "h1" {
					t.client = http1Client(t.client)
				}
				b.SetBytes(largeSize)
				b.ResetTimer()
				for b.Loop() {
					transfer(b, t)
				}
			})
		}
	}
}

// unwritten is a body of any length whose bytes are whatever the
// reader's buffer held: what is sent costs nothing to make.
type unwritten struct{}

func (unwritten) Read(p []byte) (int, error) { return len(p), nil }

func http1Client(c *http.Client) *http.Client {
	tr := c.Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	return &http.Client{Transport: tr}
}

// BenchmarkConcurrentStreams keeps 256 requests in flight, each a short
// streamed body, on the agent's two connections.
func BenchmarkConcurrentStreams(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 16<<10)
		for range 4 {
			w.Write(buf)
			w.(http.Flusher).Flush()
		}
	})
	t := tunneled(b, h)
	b.ReportAllocs()
	b.SetBytes(64 << 10)
	b.SetParallelism(128)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			getAll(b, t, "/stream")
		}
	})
}
