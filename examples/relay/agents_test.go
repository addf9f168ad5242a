package main_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// A cluster added to the agents file can connect without a restart, and
// one removed from it can no longer.
func TestAgentsFileIsReRead(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	ca, certFile, keyFile := servingCert(t, dir)
	agentsFile := filepath.Join(dir, "agents.json")
	require.NoError(t, os.WriteFile(agentsFile, []byte(`{"clusters":{"old":{"secret":"s1"}}}`), 0o600))
	addr := freeAddr(t)
	w := start(t, filepath.Join(bin, "relay"), "-listen", addr, "-cert", certFile, "-key", keyFile, "-agents", agentsFile, "-insecure-skip-client-auth")
	w.waitFor(t, "relay listening")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	run := func(id, secret string) {
		a, err := tunnel.NewAgent(&tunnel.AgentConfig{
			RelayURL: "https://" + addr, ClusterID: id, Credential: tunnel.SecretCredential(secret), Handler: http.NotFoundHandler(),
			TLSConfig: &tls.Config{RootCAs: roots}, Proxy: func(*http.Request) (*url.URL, error) { return nil, nil },
			Connections: 1, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); a.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}

	run("new", "s2")
	w.waitFor(t, "agent rejected", "new", "unknown-cluster")
	require.NoError(t, os.WriteFile(agentsFile, []byte(`{"clusters":{"new":{"secret":"s2"}}}`), 0o600))
	w.waitFor(t, "agents file applied")
	w.waitFor(t, "agent connected", "new")

	run("old", "s1")
	w.waitFor(t, "agent rejected", "old", "unknown-cluster")
}
