package main_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// startLone starts a relay alone with an agent connected whose handler
// holds every request open (a watch), and one such request open; it
// returns the relay's process and its log.
func startLone(t *testing.T, bin string) (*exec.Cmd, *logWatcher) {
	dir := t.TempDir()
	ca, certFile, keyFile := servingCert(t, dir)
	agentsFile := filepath.Join(dir, "agents.json")
	require.NoError(t, os.WriteFile(agentsFile, []byte(`{"clusters":{"c1":{"secret":"s"}}}`), 0o600))
	addr := freeAddr(t)
	cmd := exec.Command(filepath.Join(bin, "relay"), "-listen", addr, "-cert", certFile, "-key", keyFile, "-agents", agentsFile,
		"-insecure-skip-client-auth")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	w := watch(out)
	w.waitFor(t, "relay listening")
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	a, err := tunnel.NewAgent(&tunnel.AgentConfig{RelayURL: "https://" + addr, ClusterID: "c1", Credential: tunnel.SecretCredential("s"),
		TLSConfig: &tls.Config{RootCAs: roots}, Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }, Connections: 1,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "event")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go a.Run(ctx)
	w.waitFor(t, "agent connected")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := client.Get("https://" + addr + "/clusters/c1/watch")
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return cmd, w
}

// A relay alone stops on SIGTERM with a watch open, by itself (exit 0),
// rather than waiting for agents that have nowhere to go (how long it
// takes is tested under synctest in package relay).
func TestLoneRelayStopsOnSIGTERM(t *testing.T) {
	cmd, w := startLone(t, build(t))
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	w.waitFor(t, "stopping", "grace=3s")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		assert.NoError(t, err, "the relay exits 0 once its grace is over")
	case <-time.After(time.Minute):
		t.Fatal("the relay did not stop")
	}
}

// A second signal during the stop ends the process at once, by the
// signal, instead of after the grace.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	cmd, w := startLone(t, build(t))
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	w.waitFor(t, "stopping")
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	err := cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	status := exit.Sys().(syscall.WaitStatus)
	assert.True(t, status.Signaled(), "ended by the second signal: %v", err)
	assert.Equal(t, syscall.SIGINT, status.Signal())
}
