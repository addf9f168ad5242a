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
// half of it once it has doubled, so that agents that connected while it
// held few learn that it holds many.
func TestRelayTellsItsReconnectWindow(t *testing.T) {
	h := newHarness(t, http.NotFoundHandler(), harnessOpts{
		relayCfg: func(c *tunnel.RelayConfig) { c.ReconnectRate = 1 },
		agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 4 },
	})
	assert.Eventually(t, func() bool {
		w := tunnel.ReconnectWindows(h.agent)
		return len(w) == 4 && slices.Min(w) >= 3*time.Second
	}, 10*time.Second, 10*time.Millisecond, "windows: %v", tunnel.ReconnectWindows(h.agent))
	for _, w := range tunnel.ReconnectWindows(h.agent) {
		assert.LessOrEqual(t, w, 4*time.Second, "four connections, one handshake a second")
	}
}
