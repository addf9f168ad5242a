package tunnel_test

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// prefer is a Picker that sends requests to one agent's connections only,
// and tries the replicas holding a cluster in the directory's order.
type prefer struct{ agent atomic.Pointer[string] }

func preferring(agent string) *prefer {
	p := &prefer{}
	p.agent.Store(&agent)
	return p
}

func (p *prefer) PickConn(_ string, conns []tunnel.ConnInfo, failed *tunnel.ConnInfo) []int {
	var order []int
	for i, c := range conns {
		if c.AgentID == *p.agent.Load() {
			order = append(order, i)
		}
	}
	return order
}

func (p *prefer) PickHolders(_ string, holders []string) []string { return holders }

func says(word string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, word) })
}

// A Picker decides which connection a request goes on: with two agent
// replicas connected, every request reaches the one it prefers, and a
// Picker that leaves every connection out gets the client a 503.
func TestPickerChoosesTheConnection(t *testing.T) {
	picker := preferring("agent-b")
	h := newHarness(t, says("a"), harnessOpts{
		relayCfg: func(c *tunnel.RelayConfig) { c.Picker = picker },
		agentCfg: func(c *tunnel.AgentConfig) { c.AgentID = "agent-a" },
	})
	h.startAgent(says("b"), harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.AgentID = "agent-b" }})
	require.Eventually(t, func() bool { return len(h.relay.Conns()) == 4 }, 10*time.Second, 5*time.Millisecond)

	for range 20 {
		resp, err := h.client().Get(h.url("/"))
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, "b", string(body))
	}
	nobody := "nobody"
	picker.agent.Store(&nobody)
	resp, err := h.client().Get(h.url("/"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// A Picker decides which replica holding a cluster a request goes to
// first: one that puts a dead holder last sends no request its way,
// where the relay's own choice sends some there first.
func TestPickerChoosesTheHolder(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, va := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true,
		relayCfg: func(c *tunnel.RelayConfig) { c.Picker = preferring("") }})
	startReplica(t, dir, fleet, fleet, echo, harnessOpts{})
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	va.extra = []string{dead.Addr().String()} // listed after the live holder: tried last
	dead.Close()

	for range 20 {
		resp, err := a.client().Get(a.url("/api/v1/pods"))
		require.NoError(t, err)
		decode(t, resp)
	}
	assert.EqualValues(t, 20, a.relay.Stats().PeerForwarded, "every request went to the live holder first")
}

// A request the front door refuses never reaches the Middleware: what a
// caller without a token can make the relay hold stays what the front
// door bounds, whatever layer an importer adds behind it.
func TestMiddlewareRunsAfterTheFrontDoor(t *testing.T) {
	var reached atomic.Int32
	h := newHarness(t, echo, harnessOpts{relayCfg: func(c *tunnel.RelayConfig) {
		c.ClientAuthorizer = tunnel.ClientAuthorizerFunc(func(r *http.Request, _ string) error {
			if r.Header.Get("Authorization") == "" {
				return &tunnel.AccessError{Code: http.StatusUnauthorized, Reason: "no-token", Message: "no token"}
			}
			return nil
		})
		c.Middleware = func(next http.RoundTripper) http.RoundTripper {
			return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
				reached.Add(1)
				return next.RoundTrip(req)
			})
		}
	}})
	for range 20 {
		resp, err := h.client().Get(h.url("/api/v1/pods?watch=true"))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	assert.Zero(t, reached.Load(), "no refused request reached the middleware")

	req, _ := http.NewRequest(http.MethodGet, h.url("/api/v1/pods"), nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := h.client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.EqualValues(t, 1, reached.Load(), "an admitted request goes through it")
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
