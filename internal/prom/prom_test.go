package prom_test

import (
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/clusterconnect/clusterconnect/internal/prom"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tunnel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The metrics a relay and an agent register, with the runtime and process
// collectors, pass promtool's checks as served.
func TestMetricsPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		msg := "promtool is missing (Debian: apt-get install prometheus; ./hack/test.sh installs it)"
		if kubetest.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
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
		"clusterconnect_agent_streams_in_flight", "go_goroutines", "process_resident_memory_bytes"} {
		assert.Contains(t, body, "\n"+name, "served: %s", name)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "promtool check metrics:\n%s", out)
}
