package tunnel_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// A relay tells its agents over how many seconds to spread their
// reconnects when it restarts — its connections over the handshakes it
// takes a second — in each handshake, and again to those told less than
// half of it (at their handshake's end, and once it has doubled), so that
// agents that connected while it held few learn that it holds many.
func TestRelayTellsItsReconnectWindow(t *testing.T) {
	h := newHarness(t, http.NotFoundHandler(), harnessOpts{
		relayCfg: func(c *tunnel.RelayConfig) { c.ReconnectRate = 1 },
		agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 4 },
	})
	// Four connections at one handshake a second: a 4 s window, of which
	// each agent holds at least half, whatever order its handshakes and
	// the relay's telling went in.
	var w []time.Duration
	assert.Eventually(t, func() bool {
		w = tunnel.ReconnectWindows(h.agent)
		return len(w) == 4 && slices.Min(w) >= 2*time.Second
	}, 10*time.Second, 10*time.Millisecond, "every connection told at least half the window")
	assert.Len(t, w, 4)
	for _, d := range w {
		assert.LessOrEqual(t, d, 4*time.Second, "windows: %v", w)
	}
}
