package main_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// What an unauthenticated caller can make the relay binary hold before
// any request is read: a bounded number of connections, and a bounded
// header on each.
func TestFrontEndBounds(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	ca, certFile, keyFile := servingCert(t, dir)
	agentsFile := filepath.Join(dir, "agents.json")
	require.NoError(t, os.WriteFile(agentsFile, []byte(`{"clusters":{"c1":{"secret":"s"}}}`), 0o600))
	addr, metrics := freeAddr(t), freeAddr(t)
	w := start(t, filepath.Join(bin, "relay"), "-listen", addr, "-metrics-listen", metrics, "-cert", certFile, "-key", keyFile,
		"-agents", agentsFile, "-insecure-skip-client-auth", "-max-client-conns", "3", "-max-header-bytes", "8192")
	w.waitFor(t, "relay listening")
	dialer := tlsDialer(t, ca)
	dial := func() (*tls.Conn, error) { return dialer(addr) }
	// get sends one request with a header of n bytes and returns the
	// answer's status code.
	get := func(c *tls.Conn, n int) int {
		t.Helper()
		return status(t, c, "/clusters/c1/api/v1/pods", "X-Pad: "+strings.Repeat("a", n))
	}

	refused := func() (n int) {
		t.Helper()
		resp, err := http.Get("http://" + metrics + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "clusterconnect_relay_client_conns_refused_total "); ok {
				n, err = strconv.Atoi(v)
				require.NoError(t, err)
				return n
			}
		}
		t.Fatal("no clusterconnect_relay_client_conns_refused_total")
		return 0
	}

	t.Run("a header over -max-header-bytes is refused with 431", func(t *testing.T) {
		c, err := dial()
		require.NoError(t, err)
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, get(c, 16<<10), "net/http allows 4 KiB over the bound")
		c.Close()
		c, err = dial()
		require.NoError(t, err)
		assert.Equal(t, http.StatusServiceUnavailable, get(c, 6<<10), "a header under the bound reaches the relay (no agent is connected)")
		c.Close()
	})

	t.Run("connections past -max-client-conns are reset, and counted", func(t *testing.T) {
		held := make([]*tls.Conn, 0, 3)
		require.Eventually(t, func() bool { // the previous subtest's connections close
			c, err := dial()
			if err != nil {
				return false
			}
			held = append(held, c)
			return len(held) == 3
		}, time.Minute, 50*time.Millisecond)
		before := refused()
		_, err := dial()
		require.Error(t, err, "a fourth connection is reset before its TLS handshake")
		assert.Equal(t, before+1, refused())
		w.waitFor(t, "client connections at their bound")

		// The held connections still work, and one closing makes room.
		assert.Equal(t, http.StatusServiceUnavailable, get(held[0], 10))
		held[1].Close()
		require.Eventually(t, func() bool {
			c, err := dial()
			if err == nil {
				c.Close()
			}
			return err == nil
		}, time.Minute, 50*time.Millisecond)
	})
}

// A relay started with -self-signed keeps its CA across restarts, so what
// trusts the CA file it wrote keeps trusting it.
func TestSelfSignedRelayKeepsItsCA(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	agentsFile := filepath.Join(dir, "agents.json")
	require.NoError(t, os.WriteFile(agentsFile, []byte(`{"clusters":{"c1":{"secret":"s"}}}`), 0o600))
	caOut := filepath.Join(dir, "relay-ca.crt")
	startRelay := func() (addr string, stop func()) {
		addr = freeAddr(t)
		cmd := exec.Command(filepath.Join(bin, "relay"), "-listen", addr, "-self-signed", "-self-signed-dir", filepath.Join(dir, "state"),
			"-ca-out", caOut, "-agents", agentsFile, "-insecure-skip-client-auth")
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = cmd.Stdout
		require.NoError(t, cmd.Start())
		watch(out).waitFor(t, "relay listening")
		return addr, func() { cmd.Process.Kill(); cmd.Wait() }
	}
	_, stop := startRelay()
	first, err := os.ReadFile(caOut)
	require.NoError(t, err)
	stop()

	addr, stop := startRelay()
	defer stop()
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(first))
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	require.NoError(t, err, "the CA file from the first start still verifies the restarted relay")
	conn.Close()
	second, err := os.ReadFile(caOut)
	require.NoError(t, err)
	assert.Equal(t, string(first), string(second))
}

// The window and bound flags are checked before the relay starts, with
// what is wrong in the words of the flags.
func TestRelayRefusesBadWindowFlags(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	agentsFile := filepath.Join(dir, "agents.json")
	require.NoError(t, os.WriteFile(agentsFile, []byte(`{"clusters":{"c1":{"secret":"s"}}}`), 0o600))
	for _, tt := range []struct{ args, want string }{
		{"-stream-window 4096", "-stream-window must be between 16 KiB and 16 MiB"},
		{"-stream-window-limit 32768", "-stream-window-limit must be between -stream-window and 64 MiB"},
		{"-stream-window-limit 1073741824", "-stream-window-limit must be between -stream-window and 64 MiB"},
		{"-stream-window-budget -1", "-stream-window-budget must not be negative"},
		{"-max-conns-per-cluster -1", "-max-conns-per-cluster must not be negative (0: no bound)"},
		{"-reconnect-rate 0", "-reconnect-rate must be at least 1 (agent handshakes a second)"},
	} {
		args := append([]string{"-listen", freeAddr(t), "-self-signed", "-self-signed-dir", filepath.Join(dir, "state"),
			"-agents", agentsFile, "-insecure-skip-client-auth"}, strings.Fields(tt.args)...)
		// A relay that took the flags would serve until killed.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "relay"), args...).CombinedOutput()
		cancel()
		require.Error(t, err, "%s", out)
		assert.Contains(t, string(out), tt.want)
	}
}

// With -agent-listen, agents reconnect while callers hold every place on
// the clients' listener; and an agent's accepted connections leave the
// bound: four of them come in with -max-client-conns 3.
func TestAgentsHaveTheirOwnListener(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	ca, certFile, keyFile := servingCert(t, dir)
	caFile, agentsFile, secretFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "agents.json"), filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM(), 0o600))
	require.NoError(t, os.WriteFile(agentsFile, []byte(`{"clusters":{"c1":{"secret":"s3cret"}}}`), 0o600))
	require.NoError(t, os.WriteFile(secretFile, []byte("s3cret"), 0o600))
	kubeconfig := filepath.Join(dir, "kubeconfig") // the agent's API server: never reached, tokens are refused first
	require.NoError(t, os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"+
		"users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"), 0o600))

	addr, agentAddr := freeAddr(t), freeAddr(t)
	w := start(t, filepath.Join(bin, "relay"), "-listen", addr, "-agent-listen", agentAddr, "-cert", certFile, "-key", keyFile,
		"-agents", agentsFile, "-insecure-skip-client-auth", "-max-client-conns", "3")
	w.waitFor(t, "relay listening")
	dial := tlsDialer(t, ca)

	// Callers hold every place on the clients' listener.
	held := make([]*tls.Conn, 3)
	for i := range held {
		c, err := dial(addr)
		require.NoError(t, err)
		held[i] = c
	}
	_, err := dial(addr)
	require.Error(t, err, "a fourth connection to the clients' listener is reset")

	// An agent keeping four connections still comes in, on its own port.
	start(t, filepath.Join(bin, "agent"), "-relay-url", "https://"+agentAddr, "-cluster-id", "c1", "-secret-file", secretFile,
		"-relay-ca", caFile, "-kubeconfig", kubeconfig, "-tenant", "44444444-4444-4444-8444-444444444444", "-audience", "api://x",
		"-health-listen", freeAddr(t), "-connections", "4", "-wait-for-keys", "0")
	for range 4 {
		w.waitFor(t, "agent connected", "c1")
	}

	// A held client connection reaches the cluster: the agent itself
	// refuses the request for its missing token (no agent would be 503).
	assert.Equal(t, http.StatusUnauthorized, status(t, held[0], "/clusters/c1/version"))
	// Each listener serves its own side only.
	assert.Equal(t, http.StatusNotFound, status(t, held[1], tunnel.DefaultAgentPath), "no handshakes on the clients' listener")
	c, err := dial(agentAddr)
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, status(t, c, "/clusters/c1/version"), "no client requests on the agents' listener")
	// What a stranger can send the agents' listener is bounded as on the
	// clients': a header past -max-header-bytes (64 KiB) gets 431.
	c, err = dial(agentAddr)
	require.NoError(t, err)
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, status(t, c, tunnel.DefaultAgentPath, "X-Pad: "+strings.Repeat("a", 70<<10)))
}

// tlsDialer dials the relay over TLS (HTTP/1.1), trusting ca; the
// connections close when the test ends.
func tlsDialer(t *testing.T, ca *pki.CA) func(addr string) (*tls.Conn, error) {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	return func(addr string) (*tls.Conn, error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
}

// status sends one GET for path with the header lines given on c and
// returns the answer's status code.
func status(t *testing.T, c *tls.Conn, path string, header ...string) int {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: relay\r\n", path)
	for _, h := range header {
		fmt.Fprintf(c, "%s\r\n", h)
	}
	fmt.Fprint(c, "\r\n")
	c.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
