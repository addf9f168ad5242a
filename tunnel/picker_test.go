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
