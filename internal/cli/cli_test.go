package cli_test

import (
	"flag"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/cli"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

func TestFlagsFallBackToEnvironment(t *testing.T) {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	listen := fs.String("listen", ":8443", "")
	agents := fs.String("agents", "", "")
	format := fs.String("log-format", "text", "")
	t.Setenv("CLUSTERCONNECT_RELAY_LISTEN", "127.0.0.1:9443")
	t.Setenv("CLUSTERCONNECT_RELAY_AGENTS", "from-env.json")
	t.Setenv("CLUSTERCONNECT_RELAY_LOG_FORMAT", "json")

	require.NoError(t, cli.ParseWithEnv(fs, "CLUSTERCONNECT_RELAY", []string{"-agents", "from-flag.json"}))
	assert.Equal(t, "127.0.0.1:9443", *listen, "unset flag: the environment")
	assert.Equal(t, "from-flag.json", *agents, "the command line wins")
	assert.Equal(t, "json", *format)

	fs2 := flag.NewFlagSet("x", flag.ContinueOnError)
	fs2.Int("connections", 2, "")
	t.Setenv("X_CONNECTIONS", "many")
	assert.ErrorContains(t, cli.ParseWithEnv(fs2, "X", nil), "X_CONNECTIONS")
}

func TestMetricsAreInPrometheusTextFormat(t *testing.T) {
	h := cli.Metrics(func() []cli.Counter {
		return cli.TunnelCounters("clusterconnect_relay", tunnel.Stats{
			ConnectionsOpened: 3, ConnectionsClosed: 1, HandshakeFailures: map[string]uint64{"bad-secret": 2},
		})
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	assert.Contains(t, string(body), "# TYPE clusterconnect_relay_connections_opened_total counter\nclusterconnect_relay_connections_opened_total 3\n")
	assert.Contains(t, string(body), `clusterconnect_relay_handshake_failures_total{reason="bad-secret"} 2`)
	assert.Equal(t, "text/plain; version=0.0.4", rec.Header().Get("Content-Type"))
}
