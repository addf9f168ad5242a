package tunnel_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/sessions"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// An authorizer that ends a watch it admitted (tunnel.EndRequest): the
// client reads an ERROR event with the authorizer's words, from a
// Middleware that knows watches, and the stream ends cleanly.
func TestEndRequestEndsAWatchInWords(t *testing.T) {
	ends := make(chan func(error), 1)
	release := make(chan struct{})
	defer close(release)
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json;stream=watch")
		fmt.Fprintln(w, `{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","resourceVersion":"5"}}}`)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), harnessOpts{relayCfg: func(c *tunnel.RelayConfig) {
		c.ClientAuthorizer = tunnel.ClientAuthorizerFunc(func(r *http.Request, _ string) error {
			ends <- tunnel.EndRequest(r.Context())
			return nil
		})
		c.Middleware = sessions.Watches
	}})
	for range 20 {
		resp, err := h.client().Get(h.url("/api/v1/pods?watch=true&resourceVersion=1"))
		require.NoError(t, err)
		end := <-ends
		require.NotNil(t, end)
		lines := bufio.NewReader(resp.Body)
		first, err := lines.ReadString('\n')
		require.NoError(t, err)
		assert.Contains(t, first, `"ADDED"`)
		end(&tunnel.AccessError{Code: http.StatusForbidden, Reason: "revoked", Message: "no longer yours"})
		rest, err := io.ReadAll(lines)
		require.NoError(t, err, "the stream ends cleanly")
		assert.Contains(t, string(rest), `"type":"ERROR"`)
		assert.Contains(t, string(rest), "no longer yours")
		resp.Body.Close()
	}
}

// A request ended before its answer began gets the authorizer's words as
// its answer, not an empty one.
func TestEndRequestBeforeTheAnswer(t *testing.T) {
	ends := make(chan func(error), 1)
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers nothing until the relay gives up
	}), harnessOpts{relayCfg: func(c *tunnel.RelayConfig) {
		c.ClientAuthorizer = tunnel.ClientAuthorizerFunc(func(r *http.Request, _ string) error {
			ends <- tunnel.EndRequest(r.Context())
			return nil
		})
		c.Middleware = sessions.Watches
	}})
	go func() {
		(<-ends)(&tunnel.AccessError{Code: http.StatusForbidden, Reason: "revoked", Message: "no longer yours"})
	}()
	resp, err := h.client().Get(h.url("/api/v1/pods?watch=true&resourceVersion=1"))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Contains(t, string(body), "no longer yours")
}

// Disconnect closes a cluster's tunnel connections at once; the agent,
// still let in by the Authenticator here, comes back.
func TestDisconnectClosesTheClustersConnections(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 1 }})
	require.True(t, h.relay.Connected(clusterID))
	opened := h.relay.Stats().ConnectionsOpened
	h.relay.Disconnect(clusterID)
	assert.False(t, h.relay.Connected(clusterID), "no connection left at once")
	assert.EqualValues(t, 1, h.relay.Stats().ConnectionsClosedBy["removed"])
	require.Eventually(t, func() bool { return h.relay.Stats().ConnectionsOpened > opened }, 10*time.Second, 10*time.Millisecond)
}
