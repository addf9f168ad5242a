package main_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
)

// build compiles the relay and agent binaries once for this package.
func build(t *testing.T) string {
	bin := t.TempDir()
	out, err := exec.Command("go", "build", "-o", bin+"/", ".", "../agent").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// servingCert makes a CA and a loopback serving certificate for the relay,
// written to dir.
func servingCert(t *testing.T, dir string) (ca *pki.CA, certFile, keyFile string) {
	t.Helper()
	ca, err := pki.NewCA("relay test CA")
	require.NoError(t, err)
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")
	require.NoError(t, leaf.WriteFiles(certFile, keyFile))
	return ca, certFile, keyFile
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// logWatcher collects a process's output lines and waits for one.
type logWatcher struct{ lines chan string }

func start(t *testing.T, path string, args ...string) *logWatcher {
	cmd := exec.Command(path, args...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return watch(out)
}

// watch collects the lines a process writes to out.
func watch(out io.Reader) *logWatcher {
	w := &logWatcher{lines: make(chan string, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case w.lines <- sc.Text():
			default:
			}
		}
		close(w.lines)
	}()
	return w
}

func (w *logWatcher) waitFor(t *testing.T, parts ...string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	var seen []string
	for {
		select {
		case line, ok := <-w.lines:
			if !ok {
				t.Fatalf("exited before logging %q; it logged:\n%s", parts, strings.Join(seen, "\n"))
			}
			seen = append(seen, line)
			match := true
			for _, p := range parts {
				match = match && strings.Contains(line, p)
			}
			if match {
				return line
			}
		case <-timeout:
			t.Fatalf("never logged %q; it logged:\n%s", parts, strings.Join(seen, "\n"))
		}
	}
}

// Agent assertions name one relay: the relay binary's -public-url, which
// the agent binary takes from its -relay-url. A relay named otherwise
// refuses them and logs why; -assertion-audience sets the name where the
// two URLs differ (a load balancer's address, say).
func TestAssertionsNameTheRelay(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	require.NoError(t, err)
	keyFile := filepath.Join(dir, "agent.key")
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600))
	agents, err := json.Marshal(map[string]any{"clusters": map[string]any{"edge-7": map[string]any{
		"publicKeys": []string{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))},
	}}})
	require.NoError(t, err)
	agentsFile := filepath.Join(dir, "agents.json")
	require.NoError(t, os.WriteFile(agentsFile, agents, 0o600))

	ca, err := pki.NewCA("relay test CA")
	require.NoError(t, err)
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	require.NoError(t, err)
	certFile, relayKey, caFile := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key"), filepath.Join(dir, "ca.crt")
	require.NoError(t, leaf.WriteFiles(certFile, relayKey))
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM(), 0o600))
	kubeconfig := filepath.Join(dir, "kubeconfig") // never reached: the test sends no requests
	require.NoError(t, os.WriteFile(kubeconfig, []byte("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"+
		"users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"), 0o600))

	relay := func(args ...string) (*logWatcher, string) {
		addr := freeAddr(t)
		args = append([]string{"-listen", addr, "-cert", certFile, "-key", relayKey, "-agents", agentsFile, "-insecure-skip-client-auth"}, args...)
		w := start(t, filepath.Join(bin, "relay"), args...)
		w.waitFor(t, "relay listening")
		return w, addr
	}
	agent := func(addr string, args ...string) {
		args = append([]string{"-relay-url", "https://" + addr, "-cluster-id", "edge-7", "-key-file", keyFile, "-relay-ca", caFile,
			"-kubeconfig", kubeconfig, "-tenant", "44444444-4444-4444-8444-444444444444", "-audience", "api://x",
			"-health-listen", freeAddr(t), "-connections", "1", "-wait-for-keys", "0"}, args...)
		start(t, filepath.Join(bin, "agent"), args...)
	}

	t.Run("a relay with keys needs its public URL", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(bin, "relay"), "-listen", freeAddr(t), "-cert", certFile, "-key", relayKey, "-agents", agentsFile, "-insecure-skip-client-auth").CombinedOutput()
		require.Error(t, err)
		require.Contains(t, string(out), "-public-url is required")
	})
	t.Run("the relay the agent dials", func(t *testing.T) {
		addr := freeAddr(t)
		w := start(t, filepath.Join(bin, "relay"), "-listen", addr, "-cert", certFile, "-key", relayKey, "-agents", agentsFile, "-insecure-skip-client-auth", "-public-url", "https://"+addr)
		w.waitFor(t, "relay listening")
		agent(addr)
		w.waitFor(t, "agent connected", "edge-7")
	})
	t.Run("another relay's name", func(t *testing.T) {
		w, addr := relay("-public-url", "https://relay.example.com")
		agent(addr)
		line := w.waitFor(t, "agent rejected", "wrong-audience")
		require.Contains(t, line, fmt.Sprintf("https://%s", addr), "the log says which relay the assertion named")
		require.Contains(t, line, "https://relay.example.com")
	})
	t.Run("an audience set on both sides", func(t *testing.T) {
		w, addr := relay("-public-url", "https://relay.example.com")
		agent(addr, "-assertion-audience", "https://relay.example.com/")
		w.waitFor(t, "agent connected", "edge-7")
	})
}
