package tunnel_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/promtest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// metricsHandler answers what an API server would: a read, a write that
// echoes its body, a watch that sends one event, an upgrade, and a 404.
var metricsHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Header.Get("Upgrade") != "":
		upgradeEcho(w, r)
	case r.Method == http.MethodPost:
		io.Copy(w, r.Body)
	case r.URL.Query().Get("watch") == "true":
		w.Write([]byte(`{"type":"ADDED"}` + "\n"))
		http.NewResponseController(w).Flush()
	case r.URL.Path == "/api/v1/namespaces/missing":
		http.Error(w, "not found", http.StatusNotFound)
	default:
		w.Write([]byte("0123456789"))
	}
})

// What operators read: requests by class and code, latency, streams in
// flight, and body bytes counted alike on both sides of the tunnel.
func TestMetricsCountWhatCrossedTheTunnel(t *testing.T) {
	relayReg, agentReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	h := newHarness(t, metricsHandler, harnessOpts{
		relayCfg: func(c *tunnel.RelayConfig) { c.Registerer = relayReg; c.MetricsPerCluster = true },
		agentCfg: func(c *tunnel.AgentConfig) { c.Registerer = agentReg },
	})
	do := func(method, path, body string) {
		req, _ := http.NewRequest(method, h.url(path), strings.NewReader(body))
		resp, err := h.client().Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for range 3 {
		do(http.MethodGet, "/api/v1/namespaces", "")
	}
	do(http.MethodPost, "/api/v1/namespaces", strings.Repeat("x", 1000))
	do(http.MethodGet, "/api/v1/namespaces?watch=true", "")
	do(http.MethodGet, "/api/v1/namespaces/missing", "")
	// A cluster nobody connected: counted, without its made-up name.
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/clusters/made-up-by-a-caller/api/v1/pods", nil)
	resp, err := h.client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	conn, _, up := dialUpgrade(t, h, "echo/1")
	require.Equal(t, http.StatusSwitchingProtocols, up.StatusCode)
	conn.Close()
	// The upgrade is counted when both ends have let it go.
	upgrade := map[string]string{"class": "upgrade", "code": "101"}
	require.Eventually(t, func() bool {
		return promtest.Value(t, relayReg, "clusterconnect_relay_requests_total", upgrade) == 1 &&
			promtest.Value(t, agentReg, "clusterconnect_agent_requests_total", upgrade) == 1
	}, 10*time.Second, 10*time.Millisecond)

	for _, tc := range []struct {
		class, code string
		relay       float64
	}{
		{"read", "200", 3}, {"write", "200", 1}, {"watch", "200", 1}, {"read", "404", 1}, {"upgrade", "101", 1},
	} {
		labels := map[string]string{"class": tc.class, "code": tc.code}
		assert.Equal(t, tc.relay, promtest.Value(t, agentReg, "clusterconnect_agent_requests_total", labels), "agent %v", labels)
		if tc.code < "400" {
			labels["cluster"] = clusterID
		} else {
			labels["cluster"] = ""
		}
		assert.Equal(t, tc.relay, promtest.Value(t, relayReg, "clusterconnect_relay_requests_total", labels), "relay %v", labels)
	}
	assert.Equal(t, 1.0, promtest.Value(t, relayReg, "clusterconnect_relay_requests_total", map[string]string{"code": "503", "cluster": ""}))
	families, err := relayReg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				assert.NotEqual(t, "made-up-by-a-caller", l.GetValue(), "a caller cannot make series")
			}
		}
	}
	assert.Equal(t, 3.0, promtest.Value(t, relayReg, "clusterconnect_relay_request_duration_seconds", map[string]string{"class": "read", "cluster": clusterID}))
	assert.Equal(t, 4.0, promtest.Value(t, agentReg, "clusterconnect_agent_request_duration_seconds", map[string]string{"class": "read"}), "reads timed, 404 included")
	assert.Equal(t, 0.0, promtest.Value(t, agentReg, "clusterconnect_agent_request_duration_seconds", map[string]string{"class": "watch"}), "watches are not timed")

	// Bytes: the agent counts ordinary bodies as the relay does.
	for _, dir := range []string{"to_agent", "from_agent"} {
		relay := promtest.Value(t, relayReg, "clusterconnect_relay_body_bytes_total", map[string]string{"direction": dir})
		agent := promtest.Value(t, agentReg, "clusterconnect_agent_body_bytes_total", map[string]string{"direction": dir})
		assert.GreaterOrEqual(t, relay, 1000.0, dir)
		assert.InDelta(t, relay, agent, 0.05*relay, "%s: relay %v, agent %v", dir, relay, agent)
	}
	assert.Equal(t, float64(len(h.relay.Conns())), promtest.Value(t, relayReg, "clusterconnect_relay_tunnel_connections", nil))
	assert.Equal(t, 1.0, promtest.Value(t, relayReg, "clusterconnect_relay_clusters", nil))
	assert.Zero(t, promtest.Value(t, relayReg, "clusterconnect_relay_stream_window_grown_bytes", nil), "answers done: no window held")
	assert.Zero(t, promtest.Value(t, relayReg, "clusterconnect_relay_client_requests_refused_total", nil), "no authorizer: nothing refused")

	// The registries are well-formed for Prometheus.
	for _, reg := range []*prometheus.Registry{relayReg, agentReg} {
		problems, err := testutil.GatherAndLint(reg)
		require.NoError(t, err)
		assert.Empty(t, problems)
	}
}

// Why tunnel connections closed: the agent went away, the relay closed,
// or HTTP/2 gave up on a connection that stopped answering.
func TestConnectionsClosedByReason(t *testing.T) {
	t.Run("agent went away, then the relay closed", func(t *testing.T) {
		h := newHarness(t, metricsHandler, harnessOpts{})
		agent := h.agent
		h.stop()
		<-h.stopped
		require.Eventually(t, func() bool { return len(h.relay.Conns()) == 0 }, 10*time.Second, 10*time.Millisecond)
		st := h.relay.Stats()
		require.Positive(t, st.ConnectionsClosed)
		assert.Equal(t, map[string]uint64{"peer-closed": st.ConnectionsClosed}, st.ConnectionsClosedBy)
		// (A connection the agent had not taken into service yet when it
		// stopped is dropped uncounted: it was never opened on its side.)
		ast := agent.Stats()
		for reason, n := range ast.ConnectionsClosedBy {
			assert.Equal(t, "shutdown", reason, "the agent says it stopped")
			assert.Equal(t, ast.ConnectionsClosed, n)
		}
		assert.Equal(t, ast.ConnectionsOpened, ast.ConnectionsClosed)

		h.startAgent(metricsHandler, harnessOpts{})
		h.waitConnected(clusterID)
		agent = h.agent
		require.Eventually(t, func() bool { return agent.Stats().ConnectionsOpened > 0 }, 10*time.Second, 10*time.Millisecond)
		before := h.relay.Stats().ConnectionsClosed
		h.relay.Close()
		st = h.relay.Stats()
		assert.EqualValues(t, st.ConnectionsClosed-before, st.ConnectionsClosedBy["relay-closed"])
		require.Eventually(t, func() bool {
			ast := agent.Stats()
			return ast.ConnectionsClosed > 0 && ast.ConnectionsClosedBy["peer-closed"] == ast.ConnectionsClosed
		}, 10*time.Second, 10*time.Millisecond, "the agent sees the relay close them")
	})
	t.Run("agent stops answering", func(t *testing.T) {
		var proxy *cutProxy
		fast := func(interval, timeout *time.Duration) {
			*interval, *timeout = 100*time.Millisecond, 200*time.Millisecond
		}
		h := newHarness(t, metricsHandler, harnessOpts{
			relayCfg:  func(c *tunnel.RelayConfig) { fast(&c.PingInterval, &c.PingTimeout) },
			agentCfg:  func(c *tunnel.AgentConfig) { c.Connections = 1; fast(&c.PingInterval, &c.PingTimeout) },
			relayAddr: func(relay string) string { proxy = newCutProxy(t, relay); return proxy.addr() },
		})
		thaw := proxy.freeze()
		defer thaw()
		require.Eventually(t, func() bool { return !h.relay.Connected(clusterID) }, 10*time.Second, 10*time.Millisecond)
		assert.Equal(t, map[string]uint64{"lost": 1}, h.relay.Stats().ConnectionsClosedBy)
	})
}
