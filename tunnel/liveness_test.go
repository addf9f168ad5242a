package tunnel_test

import (
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// An idle connection whose network works is kept however long it idles:
// pings answered every interval, no reconnect.
func TestIdleLiveConnectionIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemHarness(t, echo, nil, nil)
		opened := h.relay.Stats().ConnectionsOpened
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.True(t, h.relay.Connected(clusterID))
		assert.Equal(t, opened, h.relay.Stats().ConnectionsOpened, "no connection was replaced")
		resp, err := h.client().Get(h.url("/after-an-hour"))
		require.NoError(t, err)
		assert.Equal(t, "/after-an-hour", decode(t, resp).Path)
	})
}

// A connection whose network silently stops carrying packets is dropped
// by both sides once a ping goes unanswered: within PingInterval and
// PingTimeout of the last byte. The relay then answers 503 at once; the
// agent's new connection gets through when the network is back.
func TestSilentlyDeadConnectionIsDroppedInTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemHarness(t, echo, nil, func(c *tunnel.AgentConfig) { c.Connections = 1 })
		thaw := h.net.freeze()
		time.Sleep(tunnel.DefaultPingInterval - time.Millisecond)
		synctest.Wait()
		assert.True(t, h.relay.Connected(clusterID), "an idle connection is not pinged before PingInterval")
		time.Sleep(tunnel.DefaultPingTimeout + time.Millisecond)
		synctest.Wait()
		assert.False(t, h.relay.Connected(clusterID), "dropped within %v", tunnel.DefaultPingInterval+tunnel.DefaultPingTimeout)

		resp, err := h.client().Get(h.url("/while-dead"))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)

		thaw()
		time.Sleep(tunnel.DefaultMaxBackoff)
		synctest.Wait()
		resp, err = h.client().Get(h.url("/alive-again"))
		require.NoError(t, err)
		assert.Equal(t, "/alive-again", decode(t, resp).Path)
	})
}
