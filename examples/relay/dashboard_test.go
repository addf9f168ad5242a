package main_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// The Grafana dashboard parses, and every metric its queries name is one
// the relay binary serves once it has seen callers and agents.
func TestDashboardNamesMetricsTheRelayServes(t *testing.T) {
	raw, err := os.ReadFile("../../charts/clusterconnect-relay/dashboards/relay.json")
	require.NoError(t, err)
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.Panels)

	served := servedMetrics(t)
	name := regexp.MustCompile(`\b(clusterconnect_|go_|process_)[a-z_]+\b`)
	seen := 0
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, target := range p.Targets {
			for _, m := range name.FindAllString(target.Expr, -1) {
				seen++
				assert.True(t, served[m], "panel %q queries %s, which the relay does not serve", p.Title, m)
			}
		}
	}
	assert.Greater(t, seen, 15)
}

// The chart's alerting rules parse, and every metric they name is one the
// relay binary serves.
func TestAlertsNameMetricsTheRelayServes(t *testing.T) {
	raw, err := os.ReadFile("../../charts/clusterconnect-relay/alerts/relay-rules.yaml")
	require.NoError(t, err)
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &file))
	served := servedMetrics(t)
	name := regexp.MustCompile(`\bclusterconnect_[a-z_]+\b`)
	seen := 0
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			for _, m := range name.FindAllString(r.Expr, -1) {
				seen++
				assert.True(t, served[m], "alert %s queries %s, which the relay does not serve", r.Alert, m)
			}
		}
	}
	assert.GreaterOrEqual(t, seen, 6)
}

// servedMetrics starts the relay binary with a front door, sends it a
// refused agent, an accepted one, a bad token and a good token, and
// returns the names of the series its /metrics serves.
func servedMetrics(t *testing.T) map[string]bool {
	bin := build(t)
	dir := t.TempDir()
	ca, certFile, keyFile := servingCert(t, dir)
	issuer, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(issuer.Close)
	const tenant, audience = "72f988bf-86f1-41af-91ab-2d7cd011db47", "api://clusterconnect-server"
	issuerCA := filepath.Join(dir, "issuer-ca.crt")
	agents := filepath.Join(dir, "agents.json")
	policy := filepath.Join(dir, "policy.json")
	for path, data := range map[string]string{
		issuerCA: string(issuer.CA.CertPEM()),
		agents:   `{"clusters":{"c1":{"secret":"s"}}}`,
		policy:   `{"clusters":{"c1":{"groups":["g1"]}}}`,
	} {
		require.NoError(t, os.WriteFile(path, []byte(data), 0o600))
	}
	addr, metrics := freeAddr(t), freeAddr(t)
	w := start(t, filepath.Join(bin, "relay"), "-listen", addr, "-metrics-listen", metrics, "-cert", certFile, "-key", keyFile,
		"-agents", agents, "-access-policy", policy, "-tenant", tenant, "-audience", audience,
		"-entra-discovery-base", issuer.URL, "-issuer-ca", issuerCA)
	w.waitFor(t, "relay listening")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())

	agent := func(secret string) context.CancelFunc {
		a, err := tunnel.NewAgent(&tunnel.AgentConfig{
			RelayURL: "https://" + addr, ClusterID: "c1", Credential: tunnel.SecretCredential(secret),
			Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }),
			TLSConfig: &tls.Config{RootCAs: roots}, Connections: 1,
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		go a.Run(ctx)
		t.Cleanup(cancel)
		return cancel
	}
	stop := agent("wrong")
	w.waitFor(t, "agent rejected")
	stop()
	agent("s")
	w.waitFor(t, "agent connected")

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	good, err := issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, OID: "alice", Groups: []string{"g1"}})
	require.NoError(t, err)
	for _, token := range []string{"not-a-token", good} {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/clusters/c1/api/v1/pods", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}

	resp, err := http.Get("http://" + metrics + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		n, _, _ := strings.Cut(line, " ")
		n, _, _ = strings.Cut(n, "{")
		names[n] = true
	}
	require.NoError(t, sc.Err())
	return names
}
