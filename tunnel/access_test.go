package tunnel_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// allowBearer is a ClientAuthorizer that lets "Bearer good" reach the test
// cluster and refuses everything else the same way.
func allowBearer(asked *atomic.Int64) tunnel.ClientAuthorizer {
	return tunnel.ClientAuthorizerFunc(func(r *http.Request, id string) error {
		asked.Add(1)
		if r.Header.Get("Authorization") == "Bearer good" && id == clusterID {
			return nil
		}
		return &tunnel.AccessError{Code: http.StatusForbidden, Reason: "not-allowed", Message: "you may not reach this cluster"}
	})
}

type answer struct {
	code int
	body string
}

func mustRequest(t *testing.T, url, bearer string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return req
}

func get(t *testing.T, c *http.Client, url, bearer string) answer {
	resp, err := c.Do(mustRequest(t, url, bearer))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}
}

// A refused caller costs no stream and cannot tell a connected cluster
// from an unknown one or a disconnected one: the answers are identical.
func TestClientAuthorizerRefusesBeforeAnyStream(t *testing.T) {
	var asked atomic.Int64
	var reached atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1); fmt.Fprint(w, "reached") })
	h := newHarness(t, handler, harnessOpts{relayCfg: func(c *tunnel.RelayConfig) { c.ClientAuthorizer = allowBearer(&asked) }})
	other := newHarness(t, handler, harnessOpts{relayCfg: func(c *tunnel.RelayConfig) { c.ClientAuthorizer = allowBearer(&asked) }, noAgent: true})

	connected := get(t, h.client(), h.url("/api"), "stolen")
	unknown := get(t, h.client(), h.srv.URL+"/clusters/no-such-cluster/api", "stolen")
	disconnected := get(t, other.client(), other.url("/api"), "good") // known to the authorizer, no agent
	none := get(t, h.client(), h.url("/api"), "")

	assert.Equal(t, http.StatusForbidden, connected.code)
	assert.Equal(t, connected, unknown, "unknown and forbidden look the same")
	assert.Equal(t, connected, none)
	assert.Contains(t, connected.body, "you may not reach this cluster")
	assert.NotContains(t, connected.body, clusterID, "the answer does not name the cluster")
	assert.Zero(t, h.relay.Stats().StreamsOpened, "no stream for a refused request")
	assert.Zero(t, reached.Load())
	assert.EqualValues(t, 3, h.relay.Stats().ClientsRefused)

	// An allowed caller gets through, and gets today's clear messages.
	assert.Equal(t, answer{http.StatusOK, "reached"}, get(t, h.client(), h.url("/api"), "good"))
	// /api is read raw by client-go, which shows a 502's text only.
	assert.Equal(t, http.StatusBadGateway, disconnected.code)
	assert.Contains(t, disconnected.body, "is not connected to the relay")
	resp, err := other.client().Do(mustRequest(t, other.url("/api/v1/pods"), "good"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Empty(t, resp.Header.Get("Retry-After"), "kubectl would retry for ten seconds before saying why")
	assert.EqualValues(t, 6, asked.Load())
}

// An upgrade (kubectl exec) is refused before a raw stream is opened, and
// at once: a refused caller that keeps its body coming does not hold the
// answer back (net/http would otherwise read its body first).
func TestClientAuthorizerRefusesUpgradesBeforeAnyStream(t *testing.T) {
	var asked atomic.Int64
	h := newHarness(t, echo, harnessOpts{relayCfg: func(c *tunnel.RelayConfig) { c.ClientAuthorizer = allowBearer(&asked) }})
	conn, err := tls.Dial("tcp", h.srv.Listener.Addr().String(), &tls.Config{RootCAs: h.roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /clusters/%s/api/v1/namespaces/ns/pods/p/exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n"+
		"Authorization: Bearer stolen\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", clusterID)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.True(t, resp.Close, "the answer says the connection closes")
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), "you may not reach this cluster")
	assert.Zero(t, h.relay.Stats().StreamsOpened)
	_, err = br.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the relay closed the connection instead of reading the rest of the body")
}

// An authorizer that fails in another way refuses, without saying why.
func TestClientAuthorizerErrorsFailClosed(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{relayCfg: func(c *tunnel.RelayConfig) {
		c.ClientAuthorizer = tunnel.ClientAuthorizerFunc(func(*http.Request, string) error {
			return errors.New("policy store at 10.0.0.7 unreachable")
		})
	}})
	a := get(t, h.client(), h.url("/api"), "good")
	assert.Equal(t, http.StatusForbidden, a.code)
	assert.NotContains(t, a.body, "10.0.0.7", "internal detail stays in the log")
	assert.Zero(t, h.relay.Stats().StreamsOpened)
}
