package cli_test

import (
	"flag"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/cli"
	"github.com/clusterconnect/clusterconnect/internal/kubetest"
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
	reg := cli.NewRegistry()
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{"c": "s"}, Registerer: reg, MetricsPerCluster: true})
	require.NoError(t, err)
	defer relay.Close()
	_, err = tunnel.NewAgent(&tunnel.AgentConfig{RelayURL: "https://relay.example", ClusterID: "c", Credential: tunnel.SecretCredential("s"),
		Handler: http.NotFoundHandler(), Registerer: reg})
	require.NoError(t, err)
	// A request, so that the request series exist.
	relay.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/clusters/c/api/v1/pods", nil))

	rec := httptest.NewRecorder()
	cli.MetricsHandler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
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
