package prom_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/clusterconnect/clusterconnect/internal/prom"
	"github.com/clusterconnect/clusterconnect/tunnel"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The metrics a relay and an agent register, with the runtime and process
// collectors, pass the Prometheus linter as served (promlint, which
// promtool check metrics runs).
func TestMetricsPassTheLinter(t *testing.T) {
	reg := prom.NewRegistry()
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{"c": "s"}, Registerer: reg, MetricsPerCluster: true})
	require.NoError(t, err)
	defer relay.Close()
	_, err = tunnel.NewAgent(&tunnel.AgentConfig{RelayURL: "https://relay.example", ClusterID: "c", Credential: tunnel.SecretCredential("s"),
		Handler: http.NotFoundHandler(), Registerer: reg})
	require.NoError(t, err)
	// A request, so that the request series exist.
	relay.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/clusters/c/api/v1/pods", nil))

	rec := httptest.NewRecorder()
	prom.Handler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, name := range []string{"clusterconnect_relay_requests_total", "clusterconnect_relay_body_bytes_total",
		"clusterconnect_agent_streams_in_flight", "clusterconnect_build_info", "go_goroutines", "process_resident_memory_bytes"} {
		assert.Contains(t, body, "\n"+name, "served: %s", name)
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	require.NoError(t, err)
	assert.Empty(t, problems, "promlint")
}
