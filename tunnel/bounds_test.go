package tunnel_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// endless writes on /endless until its request ends, counting what it
// wrote, and closes ended then. Other paths get "ok".
func endless(written *atomic.Int64, ended chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/endless" {
			fmt.Fprint(w, "ok")
			return
		}
		defer close(ended)
		buf := make([]byte, 1<<10)
		for {
			n, err := w.Write(buf)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
}

// settled waits until v has not changed for a while and returns it.
func settled(v *atomic.Int64) int64 {
	last := v.Load()
	for {
		time.Sleep(200 * time.Millisecond)
		if now := v.Load(); now == last {
			return now
		} else {
			last = now
		}
	}
}

// A response nobody reads holds one receive window of the relay, not the
// megabytes of x/net's default: that is what a client that stops reading
// can make the relay keep, per stream.
func TestUnreadResponseHoldsOneReceiveWindow(t *testing.T) {
	var written atomic.Int64
	ended := make(chan struct{})
	h := newHarness(t, endless(&written, ended), harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 1 }})
	req, _ := http.NewRequest(http.MethodGet, "https://cluster/endless", nil)
	resp, err := h.relay.RoundTripper(clusterID).RoundTrip(req)
	require.NoError(t, err)
	n := settled(&written)
	// The window, plus what the agent's HTTP/2 server buffers before it
	// blocks (a 4 KiB write buffer and a frame).
	assert.GreaterOrEqual(t, n, int64(tunnel.DefaultMaxReceiveBufferPerStream))
	assert.LessOrEqual(t, n, int64(tunnel.DefaultMaxReceiveBufferPerStream+32<<10))
	resp.Body.Close()
	<-ended
}

// A client that reads fast, so that its window grows, and then stops
// holds at most its initial window and the relay's whole budget for
// grown windows: what clients that read and then stop can pin. (With a
// 64 MiB budget the same client held 1.5-1.8 MiB.)
func TestGrownWindowStaysWithinTheBudget(t *testing.T) {
	const budget = 128 << 10
	var written atomic.Int64
	ended := make(chan struct{})
	h := newHarness(t, endless(&written, ended), harnessOpts{
		agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 1 },
		relayCfg: func(c *tunnel.RelayConfig) {
			c.StreamWindowLimit = 4 << 20
			c.StreamWindowBudget = budget
		},
	})
	req, _ := http.NewRequest(http.MethodGet, "https://cluster/endless", nil)
	resp, err := h.relay.RoundTripper(clusterID).RoundTrip(req)
	require.NoError(t, err)
	const read = 32 << 20
	_, err = io.CopyN(io.Discard, resp.Body, read)
	require.NoError(t, err)
	n := settled(&written) - read
	// As above: the window, plus what the agent's HTTP/2 server buffers.
	assert.LessOrEqual(t, n, int64(tunnel.DefaultMaxReceiveBufferPerStream+budget+32<<10))
	assert.LessOrEqual(t, h.relay.Stats().StreamWindowGrown, int64(budget))
	resp.Body.Close()
	assert.Zero(t, h.relay.Stats().StreamWindowGrown, "the stream gave its share back")
	<-ended
}

// A relay given a larger receive window uses it, up to HTTP/2's limit on
// the connection's window: from 2 MiB a stream, the connection's window
// (a stream's times the streams allowed) is capped, and the agent must
// not end the connection over it.
func TestLargeReceiveWindowIsHonoured(t *testing.T) {
	for _, window := range []int32{2 << 20, 4 << 20} {
		t.Run(fmt.Sprint(window>>20, "MiB"), func(t *testing.T) {
			var written atomic.Int64
			ended := make(chan struct{})
			h := newHarness(t, endless(&written, ended), harnessOpts{
				agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 1 },
				relayCfg: func(c *tunnel.RelayConfig) { c.MaxReceiveBufferPerStream = window },
			})
			resp, err := h.client().Get(h.url("/"))
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)

			req, _ := http.NewRequest(http.MethodGet, "https://cluster/endless", nil)
			resp, err = h.relay.RoundTripper(clusterID).RoundTrip(req)
			require.NoError(t, err)
			n := settled(&written)
			assert.GreaterOrEqual(t, n, int64(window))
			assert.LessOrEqual(t, n, int64(window)+32<<10)
			resp.Body.Close()
			<-ended
		})
	}
}

// A client that stops reading loses its stream after the write timeout:
// the reset reaches the agent, whose handler ends, and the stream's window
// and buffers are free again. Over HTTP/1.1 and HTTP/2 alike, and on a
// ClientListener's connections, whose TLS records the relay writes in
// batches, as on others.
func TestClientThatStopsReadingLosesItsStream(t *testing.T) {
	for _, proto := range []string{"http/1.1", "h2", "http/1.1 batched", "h2 batched"} {
		t.Run(proto, func(t *testing.T) {
			var written atomic.Int64
			ended := make(chan struct{})
			o := harnessOpts{relayCfg: func(c *tunnel.RelayConfig) {
				c.WriteTimeout = 500 * time.Millisecond
			}}
			if strings.HasSuffix(proto, " batched") {
				o.listener = func(ln net.Listener) net.Listener {
					return tunnel.ClientListener(ln, tunnel.ClientListenerConfig{WriteTimeout: 500 * time.Millisecond})
				}
			}
			proto, _, _ = strings.Cut(proto, " ")
			h := newHarness(t, endless(&written, ended), o)
			if proto == "h2" {
				resp, err := h.client().Get(h.url("/endless"))
				require.NoError(t, err)
				defer resp.Body.Close() // and never read
			} else {
				conn, err := tls.Dial("tcp", h.srv.Listener.Addr().String(), &tls.Config{RootCAs: h.roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
				require.NoError(t, err)
				defer conn.Close()
				fmt.Fprintf(conn, "GET /clusters/%s/endless HTTP/1.1\r\nHost: x\r\n\r\n", clusterID) // and never read
			}
			<-ended // a hang here fails the test by timeout
			require.Eventually(t, func() bool {
				st := h.relay.Stats()
				return st.StreamsOpened == 1 && st.StreamsClosed == 1
			}, 10*time.Second, 5*time.Millisecond)
			assert.EqualValues(t, 1, h.relay.Stats().WriteTimeouts, "counted for the operator")
			// The cluster still serves others.
			assert.Equal(t, answer{http.StatusOK, "ok"}, get(t, h.client(), h.url("/after"), ""))
		})
	}
}

// The write timeout counts only while a write is stalled: a watch that is
// quiet for longer than it stays open, over HTTP/2 and HTTP/1.1.
func TestQuietWatchOutlivesTheWriteTimeout(t *testing.T) {
	for _, h2 := range []bool{true, false} {
		t.Run(fmt.Sprint("h2=", h2), func(t *testing.T) {
			h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintln(w, "first")
				w.(http.Flusher).Flush()
				time.Sleep(1500 * time.Millisecond) // three write timeouts of silence
				fmt.Fprintln(w, "second")
			}), harnessOpts{relayCfg: func(c *tunnel.RelayConfig) { c.WriteTimeout = 500 * time.Millisecond }})
			c := h.client()
			if !h2 {
				c = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.roots, ServerName: "example.com"}}}
			}
			for range 2 { // the second request reuses the connection
				resp, err := c.Get(h.url("/watch"))
				require.NoError(t, err)
				assert.Equal(t, h2, resp.ProtoMajor == 2)
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				assert.Equal(t, "first\nsecond\n", string(b))
			}
			assert.Zero(t, h.relay.Stats().WriteTimeouts, "silence is not a stalled write")
		})
	}
}

// Downloads at once share the budget: what their grown windows hold
// together never passes it, and it is all back when they end.
func TestConcurrentDownloadsShareTheBudget(t *testing.T) {
	const budget, size = 512 << 10, 16 << 20
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 32<<10)
		for n := 0; n < size; n += len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}), harnessOpts{relayCfg: func(c *tunnel.RelayConfig) {
		c.StreamWindowLimit = 1 << 20
		c.StreamWindowBudget = budget
	}})
	var most atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if g := h.relay.Stats().StreamWindowGrown; g > most.Load() {
				most.Store(g)
			}
			select {
			case <-stop:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	var g errgroup.Group
	for range 8 {
		g.Go(func() error {
			req, _ := http.NewRequest(http.MethodGet, "https://cluster/big", nil)
			resp, err := h.relay.RoundTripper(clusterID).RoundTrip(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && n != size {
				err = fmt.Errorf("got %d bytes", n)
			}
			return err
		})
	}
	require.NoError(t, g.Wait())
	close(stop)
	<-watched
	assert.LessOrEqual(t, most.Load(), int64(budget))
	assert.Zero(t, h.relay.Stats().StreamWindowGrown, "every download gave its share back")
}
