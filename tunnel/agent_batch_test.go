package tunnel_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/clusterconnect/clusterconnect/tunnel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countedConn counts the writes to a connection: its system calls.
type countedConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countedConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A download leaves the agent in writes of many TLS records each, not a
// write per record: each write the relay has to be woken for. The body
// arrives whole.
func TestAgentWritesADownloadInFewWrites(t *testing.T) {
	const size = 8 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 7)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		// As a reverse proxy copies: 32 KiB a write.
		for p := body; len(p) > 0; p = p[min(len(p), 32<<10):] {
			if _, err := w.Write(p[:min(len(p), 32<<10)]); err != nil {
				return
			}
		}
	})
	var writes atomic.Int64
	h := newHarness(t, handler, harnessOpts{agentCfg: func(c *tunnel.AgentConfig) {
		c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countedConn{Conn: conn, writes: &writes}, nil
		}
	}})
	before := writes.Load()
	resp, err := h.client().Get(h.url("/download"))
	require.NoError(t, err)
	defer resp.Body.Close()
	readWhole(t, resp, body)
	// 16 KiB records: 64 a MiB when each is written alone.
	assert.Less(t, perMiB(t, writes.Load()-before, size), 32.0, "the agent's writes per MiB downloaded")
}

// A download an HTTP/1.1 client takes through the relay leaves the relay
// in a write per copy of the relay's, not a write per TLS record: each
// 32 KiB the relay copies is two records. The body arrives whole.
func TestRelayWritesAnHTTP1DownloadInFewWrites(t *testing.T) {
	const size = 8 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 5)
	}
	var writes atomic.Int64
	h := newHarness(t, nil, harnessOpts{noAgent: true, listener: func(ln net.Listener) net.Listener {
		cl := tunnel.ClientListener(ln, tunnel.ClientListenerConfig{})
		tunnel.CountClientWrites(cl, &writes)
		return cl
	}})
	// The agent dials the relay on a listener of its own, so that only
	// the client's writes are counted.
	agents := httptest.NewUnstartedServer(h.relay)
	agents.Config.ErrorLog = quietLog
	agents.StartTLS()
	t.Cleanup(agents.Close)
	h.startAgent(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(body)
	}), harnessOpts{relayAddr: func(string) string { return agents.Listener.Addr().String() }})
	h.waitConnected(clusterID)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}}}
	t.Cleanup(tr.CloseIdleConnections)
	before := writes.Load()
	resp, err := (&http.Client{Transport: tr}).Get(h.url("/download"))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 1, resp.ProtoMajor)
	readWhole(t, resp, body)
	// 32 KiB copies: 32 a MiB, 64 when each record is written alone.
	assert.Less(t, perMiB(t, writes.Load()-before, size), 48.0, "the relay's writes per MiB downloaded")
}

// readWhole reads resp's body and checks that it is body.
func readWhole(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	require.NoError(t, err)
	require.EqualValues(t, len(body), n)
	want := sha256.Sum256(body)
	assert.Equal(t, want[:], got.Sum(nil), "the body arrived changed")
}

// perMiB is writes per MiB of a download of size bytes, logged.
func perMiB(t *testing.T, writes int64, size int) float64 {
	t.Helper()
	v := float64(writes) / float64(size>>20)
	t.Logf("%.1f writes per MiB", v)
	return v
}

// An upload through the relay (kubectl cp into a pod, exec -i) leaves
// the relay for the agent in a write per DATA frame, not a write per TLS
// record: a frame of the 16 KiB a read of the client's TLS gives is a
// record and nine bytes. The agent reads the body whole.
func TestRelayWritesAnUploadInFewWrites(t *testing.T) {
	const size = 8 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 3)
	}
	want := sha256.Sum256(body)
	var writes atomic.Int64
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.New()
		n, err := io.Copy(got, r.Body)
		if err != nil || n != size || !bytes.Equal(got.Sum(nil), want[:]) {
			http.Error(w, "the body arrived changed", http.StatusBadRequest)
			return
		}
		io.WriteString(w, "ok")
	}), harnessOpts{listener: func(ln net.Listener) net.Listener {
		cl := tunnel.ClientListener(ln, tunnel.ClientListenerConfig{})
		tunnel.CountClientWrites(cl, &writes) // the agent's connection is one of them
		return cl
	}})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}}}
	t.Cleanup(tr.CloseIdleConnections)
	before := writes.Load()
	resp, err := (&http.Client{Transport: tr}).Post(h.url("/upload"), "application/octet-stream", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", answer)
	// 16 KiB frames: 64 a MiB, 128 when each record is written alone.
	assert.Less(t, perMiB(t, writes.Load()-before, size), 96.0, "the relay's writes per MiB uploaded")
}
