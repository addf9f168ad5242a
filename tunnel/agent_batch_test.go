package tunnel_test

import (
	"context"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
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
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	require.NoError(t, err)
	require.EqualValues(t, size, n)
	want := sha256.Sum256(body)
	assert.Equal(t, want[:], got.Sum(nil), "the body arrived changed")
	// 16 KiB records: 64 a MiB when each is written alone.
	perMiB := float64(writes.Load()-before) / (size >> 20)
	assert.Less(t, perMiB, 32.0, "the agent's writes per MiB downloaded")
	t.Logf("%.1f writes per MiB", perMiB)
}
