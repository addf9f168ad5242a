package tunnel_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// connsOf counts the relay's tunnel connections for the cluster.
func connsOf(r *tunnel.Relay, id string) int {
	n := 0
	for _, c := range r.Conns() {
		if c.ClusterID == id {
			n++
		}
	}
	return n
}

// Agents connected to a relay must not take the places its listener keeps
// for clients, or a caller filling those places would keep agents from
// coming back: an accepted agent's connection leaves the bound.
func TestAgentsDoNotTakeClientsPlaces(t *testing.T) {
	refused := make(chan struct{}, 100)
	h := newHarness(t, echo, harnessOpts{
		listener: func(ln net.Listener) net.Listener {
			return tunnel.ClientListener(ln, tunnel.ClientListenerConfig{MaxConns: 2, OnRefused: func() {
				select {
				case refused <- struct{}{}:
				default: // an agent that keeps being refused must not stop Accept
				}
			}})
		},
		agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 4 },
	})
	require.Eventually(t, func() bool { return connsOf(h.relay, clusterID) == 4 }, 10*time.Second, 5*time.Millisecond,
		"the agent's four connections, past the listener's bound of 2")
	// (Handshakes under way hold places: some of the four may have been
	// reset at first, and come back.)
	for len(refused) > 0 {
		<-refused
	}

	// A client still gets through (its connection takes one place) ...
	resp, err := h.client().Get(h.url("/hello"))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// ... and the bound still holds for everything else: one more
	// connection is taken, the next reset.
	addr := h.srv.Listener.Addr().String()
	second, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer second.Close()
	third, err := net.Dial("tcp", addr)
	if err == nil { // else the reset came before the dial returned
		defer third.Close()
		third.SetReadDeadline(time.Now().Add(time.Minute))
		_, err = third.Read(make([]byte, 1))
	}
	assert.ErrorIs(t, err, syscall.ECONNRESET)
	<-refused
	assert.Equal(t, 4, connsOf(h.relay, clusterID))
}

// A cluster's agents hold at most MaxConnsPerCluster connections at one
// relay; a handshake past it is refused with 429, a Retry-After and a
// Status that says why, and the agent goes on with what it has.
func TestClusterConnectionsAreBounded(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{
		relayCfg: func(c *tunnel.RelayConfig) { c.MaxConnsPerCluster = 2 },
		agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 3 },
	})
	require.Eventually(t, func() bool { return h.relay.Stats().HandshakeFailures["too-many-connections"] >= 2 }, 10*time.Second, 5*time.Millisecond,
		"the agent's third connection is refused, again after a backoff; got %v", h.relay.Stats().HandshakeFailures)
	assert.Equal(t, 2, connsOf(h.relay, clusterID))
	assert.EqualValues(t, 2, h.relay.Stats().ConnectionsOpened, "no connection past the bound was ever set up")

	resp, err := h.client().Get(h.url("/hello"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the cluster is served on the connections it has")

	// What the agent is told, as a raw handshake sees it.
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: h.roots, ServerName: "example.com"},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
	}}
	req, err := http.NewRequest(http.MethodGet, h.srv.URL+tunnel.DefaultAgentPath, nil)
	require.NoError(t, err)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", tunnel.ProtocolV1)
	req.Header.Set(tunnel.HeaderClusterID, clusterID)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err = hc.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	assert.Contains(t, string(body), `already holds 2 tunnel connections to this relay`)
	assert.True(t, strings.Contains(string(body), `"kind":"Status"`), "a Status body: %s", body)
}

// Handshakes of one cluster that authenticate together cannot pass the
// bound between them: a place is taken before a connection is set up.
func TestClusterConnectionBoundHoldsForConcurrentHandshakes(t *testing.T) {
	// The first 12 handshakes wait for one another in Authenticate, then
	// all reach the bound at once.
	var mu sync.Mutex
	arrived, together := 0, make(chan struct{})
	auth := tunnel.AuthenticatorFunc(func(ctx context.Context, id, cred string) error {
		mu.Lock()
		if arrived++; arrived == 12 {
			close(together)
		}
		mu.Unlock()
		select {
		case <-together:
		case <-ctx.Done():
			return ctx.Err()
		}
		return tunnel.SecretAuthenticator{clusterID: secret}.Authenticate(ctx, id, cred)
	})
	h := newHarness(t, echo, harnessOpts{
		auth:     auth,
		relayCfg: func(c *tunnel.RelayConfig) { c.MaxConnsPerCluster = 3 },
		agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 12 },
	})
	// The refused nine can be counted before the accepted three are set
	// up: wait for both.
	require.Eventually(t, func() bool {
		return h.relay.Stats().HandshakeFailures["too-many-connections"] >= 9 && connsOf(h.relay, clusterID) == 3
	}, 10*time.Second, 5*time.Millisecond)
	assert.EqualValues(t, 3, h.relay.Stats().ConnectionsOpened, "no handshake got past the bound")
}
