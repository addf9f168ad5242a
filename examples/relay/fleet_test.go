package main_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// fleetReplica is one relay process of a fleet.
type fleetReplica struct {
	addr, metrics, peer string
	// The replica's peer certificate and key files, and the fleet's peer
	// CA file, which a test may rotate.
	peerCert, peerKey, peerCA string
	cmd                       *exec.Cmd
	log                       *logWatcher
}

// startFleet starts n relay processes sharing a directory in a real etcd,
// each with its own peer certificate from one peer CA.
func startFleet(t *testing.T, n int, extra ...string) ([]*fleetReplica, *x509.CertPool) {
	bin := build(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	etcd, err := kubetest.StartEtcd(ctx, filepath.Join(dir, "etcd"), 1)
	kubetest.Require(t, err)
	t.Cleanup(etcd.Stop)

	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	serving, err := pki.NewCA("relay CA")
	require.NoError(t, err)
	peerCA, err := pki.NewCA("fleet peer CA")
	require.NoError(t, err)
	leaf, err := serving.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	require.NoError(t, err)
	require.NoError(t, leaf.WriteFiles(filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")))
	peerCAFile := write("peer-ca.crt", peerCA.CertPEM())
	agents := write("agents.json", []byte(`{"clusters":{"c1":{"secret":"s"}}}`))

	var fleet []*fleetReplica
	for i := range n {
		pl, err := peerCA.Issue(pki.LeafOptions{CommonName: fmt.Sprintf("replica-%d", i), Hosts: pki.LoopbackHosts, Server: true, Client: true})
		require.NoError(t, err)
		cert, key := filepath.Join(dir, fmt.Sprintf("peer-%d.crt", i)), filepath.Join(dir, fmt.Sprintf("peer-%d.key", i))
		require.NoError(t, pl.WriteFiles(cert, key))
		r := &fleetReplica{addr: freeAddr(t), metrics: freeAddr(t), peer: freeAddr(t), peerCert: cert, peerKey: key, peerCA: peerCAFile}
		args := append([]string{"-listen", r.addr, "-metrics-listen", r.metrics,
			"-cert", filepath.Join(dir, "relay.crt"), "-key", filepath.Join(dir, "relay.key"), "-agents", agents, "-insecure-skip-client-auth",
			"-etcd-endpoints", strings.Join(etcd.Endpoints(), ","), "-replica-id", fmt.Sprintf("r%d", i),
			"-peer-listen", r.peer, "-peer-cert", cert, "-peer-key", key, "-peer-ca", peerCAFile}, extra...)
		r.cmd = exec.Command(filepath.Join(bin, "relay"), args...)
		out, err := r.cmd.StdoutPipe()
		require.NoError(t, err)
		r.cmd.Stderr = r.cmd.Stdout
		require.NoError(t, r.cmd.Start())
		t.Cleanup(func() { r.cmd.Process.Kill(); r.cmd.Wait() })
		r.log = watch(out)
		r.log.waitFor(t, "etcd directory session started")
		fleet = append(fleet, r)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(serving.CertPEM())
	return fleet, roots
}

// echoOrUpgrade answers with its path, or switches to echo/1 and copies
// its input back.
var echoOrUpgrade = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "echo/1" {
		fmt.Fprint(w, "served "+r.URL.Path)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	brw.Flush()
	io.Copy(conn, brw)
})

func connectAgent(t *testing.T, relayAddr string, roots *x509.CertPool) {
	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
		RelayURL: "https://" + relayAddr, ClusterID: "c1", Credential: tunnel.SecretCredential("s"), Handler: echoOrUpgrade,
		TLSConfig: &tls.Config{RootCAs: roots}, Proxy: func(*http.Request) (*url.URL, error) { return nil, nil },
		Connections: 1, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); agent.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func get(t *testing.T, c *http.Client, relayAddr, path string) (int, string) {
	t.Helper()
	resp, err := c.Get("https://" + relayAddr + "/clusters/c1" + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func metric(t *testing.T, addr, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// Three relay processes and one etcd: an agent connected to one replica is
// reached through every other, ordinary requests and upgrades alike.
func TestFleetOfRelayProcesses(t *testing.T) {
	fleet, roots := startFleet(t, 3, "-etcd-lease-ttl", "60s")
	connectAgent(t, fleet[0].addr, roots)
	fleet[0].log.waitFor(t, "agent connected")
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}

	for _, r := range fleet[1:] {
		var code int
		var body string
		require.Eventually(t, func() bool { // until the replica's view has the agent
			code, body = get(t, client, r.addr, "/api/v1/pods")
			return code == http.StatusOK
		}, 30*time.Second, 50*time.Millisecond, "last answer %d %s", code, body)
		assert.Equal(t, "served /api/v1/pods", body)
		assert.Positive(t, metric(t, r.metrics, "clusterconnect_relay_peer_forwarded_total"))
	}
	assert.Zero(t, metric(t, fleet[0].metrics, "clusterconnect_relay_peer_forwarded_total"), "the holder serves its own")

	t.Run("an upgrade crosses the peer hop", func(t *testing.T) {
		code, got := upgradeThrough(t, fleet[2].addr, roots, "ping through two relays")
		require.Equal(t, http.StatusSwitchingProtocols, code, got)
		assert.Equal(t, "ping through two relays", got)
	})

	t.Run("a replica that stops leaves the directory at once", func(t *testing.T) {
		// The lease lives 60 s: only the revoke on SIGTERM can make the
		// others forget the holder before then.
		require.NoError(t, fleet[0].cmd.Process.Signal(syscall.SIGTERM))
		fleet[0].cmd.Wait()
		var code int
		var body string
		require.Eventually(t, func() bool {
			code, body = get(t, client, fleet[1].addr, "/api/v1/pods")
			return code == http.StatusServiceUnavailable
		}, 30*time.Second, 50*time.Millisecond, "last answer %d %s", code, body)
		assert.Contains(t, body, "is not connected to the relay", "not a forward to a replica that is gone")
	})
}

// upgradeThrough sends an echo upgrade to the cluster through the replica
// at addr and returns what came back, or an error status.
func upgradeThrough(t *testing.T, addr string, roots *x509.CertPool, msg string) (int, string) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprint(conn, "GET /clusters/c1/exec HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	fmt.Fprint(conn, msg)
	conn.CloseWrite()
	got, err := io.ReadAll(br)
	require.NoError(t, err)
	return resp.StatusCode, string(got)
}

// The fleet's peer CA and certificates rotate without a restart: with the
// CA file holding the old and the new CA, then each replica's certificate
// replaced by one of the new CA, then the old CA taken out of the file,
// upgrades across the peer hop (each on a connection of its own, so a new
// handshake each time) keep working; once the old CA is gone, a
// certificate it signed is refused at the peer listener.
func TestFleetPeerCertificatesRotate(t *testing.T) {
	fleet, roots := startFleet(t, 2, "-etcd-lease-ttl", "60s")
	connectAgent(t, fleet[0].addr, roots)
	fleet[0].log.waitFor(t, "agent connected")
	var code int
	var body string
	require.Eventually(t, func() bool {
		code, body = upgradeThrough(t, fleet[1].addr, roots, "before")
		return code == http.StatusSwitchingProtocols
	}, 30*time.Second, 50*time.Millisecond, "last answer %d %s", code, body)
	require.Equal(t, "before", body)

	oldPEM, err := os.ReadFile(fleet[0].peerCA)
	require.NoError(t, err)
	oldLeaf, err := tls.LoadX509KeyPair(fleet[0].peerCert, fleet[0].peerKey)
	require.NoError(t, err)
	newCA, err := pki.NewCA("fleet peer CA, rotated")
	require.NoError(t, err)
	// The files change; the relays check at most once a second, at a
	// handshake.
	settle := func() { time.Sleep(1100 * time.Millisecond) }
	replace := func(path string, data []byte) {
		tmp := path + ".tmp"
		require.NoError(t, os.WriteFile(tmp, data, 0o600))
		require.NoError(t, os.Rename(tmp, path))
	}
	through := func(step string) {
		code, body := upgradeThrough(t, fleet[1].addr, roots, step)
		assert.Equal(t, http.StatusSwitchingProtocols, code, "%s: %s", step, body)
		assert.Equal(t, step, body)
	}

	replace(fleet[0].peerCA, append(append([]byte{}, oldPEM...), newCA.CertPEM()...))
	settle()
	through("both CAs")
	for i, r := range fleet {
		leaf, err := newCA.Issue(pki.LeafOptions{CommonName: fmt.Sprintf("replica-%d", i), Hosts: pki.LoopbackHosts, Server: true, Client: true})
		require.NoError(t, err)
		require.NoError(t, leaf.WriteFiles(r.peerCert+".new", r.peerKey+".new"))
		require.NoError(t, os.Rename(r.peerKey+".new", r.peerKey))
		require.NoError(t, os.Rename(r.peerCert+".new", r.peerCert))
	}
	settle()
	through("new certificates")
	replace(fleet[0].peerCA, newCA.CertPEM())
	settle()
	through("the new CA alone")

	// A certificate of the old CA no longer reaches the peer listener (it
	// did before: the replicas used such certificates).
	conn, err := tls.Dial("tcp", fleet[0].peer, &tls.Config{RootCAs: newCA.Pool(), Certificates: []tls.Certificate{oldLeaf}, NextProtos: []string{"http/1.1"}})
	if err == nil {
		defer conn.Close()
		fmt.Fprint(conn, "GET /clusters/c1/api HTTP/1.1\r\nHost: relay\r\n\r\n")
		_, err = http.ReadResponse(bufio.NewReader(conn), nil)
	}
	require.Error(t, err, "a peer certificate of the old CA is refused")
	assert.Contains(t, err.Error(), "certificate")
}
