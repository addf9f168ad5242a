package tunnel_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// memDirectory is a fleet's directory shared in memory by relays in one
// test: which peer address holds which cluster.
type memDirectory struct {
	mu      sync.Mutex
	holders map[string][]string
}

// replica is one relay's view of a memDirectory. extra, if set, is added
// to every answer (a stale or dead entry).
type replica struct {
	d     *memDirectory
	addr  string
	extra []string
	count atomic.Int32 // what Replicas says

	peer     *httptest.Server // its peer listener
	accepted atomic.Int32     // connections other replicas opened to it
	open     atomic.Int32     // of which still open
}

func (r *replica) Replicas() int { return int(r.count.Load()) }

func (r *replica) Hold(id string, held bool) {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	if r.d.holders == nil {
		r.d.holders = map[string][]string{}
	}
	hs := slices.DeleteFunc(r.d.holders[id], func(a string) bool { return a == r.addr })
	if held {
		hs = append(hs, r.addr)
	}
	r.d.holders[id] = hs
}

func (r *replica) Holders(id string) []string {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	out := slices.DeleteFunc(slices.Clone(r.d.holders[id]), func(a string) bool { return a == r.addr })
	return append(out, r.extra...)
}

// peerPKI is a fleet's peer CA and what replicas need of it.
type peerPKI struct {
	ca    *pki.CA
	roots *x509.CertPool
}

func newPeerPKI(t testing.TB, name string) *peerPKI {
	ca, err := pki.NewCA(name)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	return &peerPKI{ca: ca, roots: roots}
}

func (p *peerPKI) cert(t testing.TB) tls.Certificate {
	leaf, err := p.ca.Issue(pki.LeafOptions{CommonName: "relay-replica", Hosts: pki.LoopbackHosts, Server: true, Client: true})
	require.NoError(t, err)
	c, err := leaf.TLSCertificate()
	require.NoError(t, err)
	return c
}

// startReplica starts a harness whose relay is one replica of a fleet: a
// peer listener that takes only certificates of the fleet's CA, and peer
// TLS from client (the fleet's own, or another CA's for a test).
func startReplica(t testing.TB, dir *memDirectory, fleet, client *peerPKI, handler http.Handler, o harnessOpts) (*harness, *replica) {
	view := &replica{d: dir}
	relayCfg := o.relayCfg
	o.relayCfg = func(c *tunnel.RelayConfig) {
		c.Directory = view
		c.PeerTLSConfig = &tls.Config{Certificates: []tls.Certificate{client.cert(t)}, RootCAs: client.roots}
		if relayCfg != nil {
			relayCfg(c)
		}
	}
	// The peer listener's address is the replica's name in the directory,
	// known before any agent connects.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	view.addr = ln.Addr().String()
	noAgent := o.noAgent
	o.noAgent = true
	h := newHarness(t, handler, o)
	peer := httptest.NewUnstartedServer(h.relay.PeerHandler())
	peer.Listener.Close()
	peer.Listener = ln
	peer.EnableHTTP2 = true
	peer.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			view.accepted.Add(1)
			view.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			view.open.Add(-1)
		}
	}
	view.peer = peer
	require.NoError(t, tunnel.ConfigureServer(peer.Config)) // as the relay binary serves replicas
	peer.TLS = &tls.Config{Certificates: []tls.Certificate{fleet.cert(t)}, ClientCAs: fleet.roots, ClientAuth: tls.RequireAndVerifyClientCert}
	peer.Config.ErrorLog = quietLog
	peer.StartTLS()
	t.Cleanup(peer.Close)
	if !noAgent {
		h.startAgent(handler, o)
		h.waitConnected(clusterID)
	}
	return h, view
}

func TestFleetForwardsToTheReplicaThatHoldsTheCluster(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, _ := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true})
	b, _ := startReplica(t, dir, fleet, fleet, echo, harnessOpts{})

	req, _ := http.NewRequest(http.MethodPost, a.url("/api/v1/namespaces/a%2Fb/pods?watch=1&x=%20"), strings.NewReader("payload"))
	req.Header.Set("X-Custom", "kept")
	resp, err := a.client().Do(req)
	require.NoError(t, err)
	e := decode(t, resp)
	assert.Equal(t, "POST", e.Method)
	assert.Equal(t, "/api/v1/namespaces/a%2Fb/pods", e.RawPath, "escaping survives two prefix rewrites")
	assert.Equal(t, "watch=1&x=%20", e.Query)
	assert.Equal(t, "payload", e.Body)
	assert.Equal(t, "kept", e.Header.Get("X-Custom"))
	assert.Equal(t, req.URL.Host, e.Host, "the agent sees the Host the client sent")

	sa, sb := a.relay.Stats(), b.relay.Stats()
	assert.EqualValues(t, 1, sa.PeerForwarded)
	assert.EqualValues(t, 0, sa.StreamsOpened, "the replica the client reached holds no connection")
	assert.EqualValues(t, 1, sb.StreamsOpened)
	assert.EqualValues(t, 0, sb.PeerForwarded)
}

func TestFleetForwardsUpgrades(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, _ := startReplica(t, dir, fleet, fleet, upgradeEcho, harnessOpts{noAgent: true})
	startReplica(t, dir, fleet, fleet, upgradeEcho, harnessOpts{})

	conn, br, resp := dialUpgrade(t, a, "echo/1")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	payload := strings.Repeat("exec stdin ", 50000)
	go func() {
		io.WriteString(conn, payload)
		conn.(closeWriter).CloseWrite()
	}()
	got, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, payload+"bye", string(got), "bytes both ways, and the half-close, cross the peer hop")

	_, _, resp = dialUpgrade(t, a, "other/1")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "a refused upgrade comes back as an ordinary answer")
}

// Relay.DialContext reaches a cluster held by another replica: the
// holder opens the raw stream and splices it to the replica's connection.
// A replica whose view names no holder says the cluster is not connected.
func TestFleetDialContextReachesAnotherReplica(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, _ := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true})
	b, _ := startReplica(t, dir, fleet, fleet, echo, harnessOpts{})

	conn, err := a.relay.DialContext(context.Background(), clusterID)
	require.NoError(t, err)
	defer conn.Close()
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}
	for _, path := range []string{"/raw/one", "/raw/two"} { // one connection, kept alive
		resp, err := (&http.Client{Transport: tr}).Get("http://cluster" + path)
		require.NoError(t, err)
		assert.Equal(t, path, decode(t, resp).Path)
	}
	assert.EqualValues(t, 1, a.relay.Stats().PeerForwarded)
	assert.EqualValues(t, 0, a.relay.Stats().StreamsOpened, "the replica asked holds no connection")
	assert.EqualValues(t, 1, b.relay.Stats().StreamsOpened)

	_, err = a.relay.DialContext(context.Background(), "nobody-holds-it")
	assert.ErrorIs(t, err, tunnel.ErrNotConnected)
}

// A request crosses one peer hop at most: a replica that a stale view
// sends a request to, and that holds no connection either, answers
// instead of sending it on; the client hears "not connected" once the
// replica it reached has waited for the agent in vain.
func TestFleetForwardsOnceAtMost(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, va := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true})
	b, vb := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true})
	va.extra, vb.extra = []string{vb.addr}, []string{va.addr} // each believes the other holds it

	resp, err := a.client().Get(a.url("/api/v1/pods"))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, string(body), "is not connected to the relay")
	assert.NotZero(t, a.relay.Stats().PeerForwarded, "asked, and asked again while waiting for the agent")
	assert.EqualValues(t, 0, b.relay.Stats().PeerForwarded, "the second replica did not send it back")
}

func TestFleetTriesAnotherHolderWhenOneIsDown(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, va := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true})
	startReplica(t, dir, fleet, fleet, echo, harnessOpts{})
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	va.extra = []string{dead.Addr().String()}
	dead.Close() // nothing listens there now

	for range 20 {
		resp, err := a.client().Get(a.url("/api/v1/pods"))
		require.NoError(t, err)
		decode(t, resp)
	}
	st := a.relay.Stats()
	assert.Greater(t, st.PeerForwarded, uint64(20), "some requests met the dead holder first and went on")
	assert.Equal(t, st.PeerForwarded-20, st.PeerUnreachable, "each attempt at the dead holder counted as unreachable")
}

// A replica the directory still names for a cluster it holds no
// connection of any more (the agent left it a moment ago, or it
// restarted) says so to the replica asking, which goes on to the
// cluster's holder: while the cluster is connected, no request and no
// upgrade is answered "not connected".
func TestFleetGoesPastAStaleHolder(t *testing.T) {
	both := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			upgradeEcho(w, r)
			return
		}
		echo(w, r)
	})
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, va := startReplica(t, dir, fleet, fleet, both, harnessOpts{noAgent: true})
	stale, vs := startReplica(t, dir, fleet, fleet, both, harnessOpts{noAgent: true})
	startReplica(t, dir, fleet, fleet, both, harnessOpts{})
	va.extra = []string{vs.addr}

	const n = 16
	for range n {
		resp, err := a.client().Get(a.url("/api/v1/pods"))
		require.NoError(t, err)
		assert.Equal(t, "/api/v1/pods", decode(t, resp).Path)
	}
	for range n {
		conn, _, resp := dialUpgrade(t, a, "echo/1")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		conn.Close()
	}
	assert.Greater(t, a.relay.Stats().PeerForwarded, uint64(2*n), "some met the stale holder first and went on")
	assert.Zero(t, a.relay.Stats().PeerUnreachable, "a replica that answers is not unreachable")
	assert.Zero(t, stale.relay.Stats().StreamsOpened)
}

// Replicas take peer requests only from certificates of the fleet's CA:
// the peer listener serves requests without asking the front door.
func TestFleetRefusesAPeerWithAnotherCA(t *testing.T) {
	dir, fleet, stranger := &memDirectory{}, newPeerPKI(t, "fleet peer CA"), newPeerPKI(t, "another CA")
	// The stranger trusts the fleet's servers but has its own client
	// certificate.
	stranger.roots = fleet.roots
	a, _ := startReplica(t, dir, fleet, stranger, echo, harnessOpts{noAgent: true})
	b, _ := startReplica(t, dir, fleet, fleet, echo, harnessOpts{})

	resp, err := a.client().Get(a.url("/api/v1/pods"))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Contains(t, string(body), "another relay replica")
	assert.EqualValues(t, 0, b.relay.Stats().StreamsOpened, "nothing reached the agent")
	assert.EqualValues(t, 1, a.relay.Stats().PeerUnreachable)
}

// The front door decides once, at the replica the caller reached: the
// holder's authorizer is not asked again.
func TestFleetAsksTheFrontDoorOnce(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	var asked sync.Map
	door := func(name string, allow bool) func(*tunnel.RelayConfig) {
		return func(c *tunnel.RelayConfig) {
			c.ClientAuthorizer = tunnel.ClientAuthorizerFunc(func(*http.Request, string) error {
				asked.Store(name, true)
				if !allow {
					return &tunnel.AccessError{Code: http.StatusForbidden, Reason: "test", Message: "no"}
				}
				return nil
			})
		}
	}
	a, _ := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true, relayCfg: door("a", true)})
	startReplica(t, dir, fleet, fleet, echo, harnessOpts{relayCfg: door("b", false)})

	resp, err := a.client().Get(a.url("/api/v1/pods"))
	require.NoError(t, err)
	decode(t, resp)
	_, askedA := asked.Load("a")
	_, askedB := asked.Load("b")
	assert.True(t, askedA)
	assert.False(t, askedB)
}

// Without a Directory a relay knows only its own connections, as before.
func TestRelayWithoutDirectoryNeedsNoPeerTLS(t *testing.T) {
	_, err := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{}, Directory: &replica{d: &memDirectory{}}})
	assert.ErrorContains(t, err, "PeerTLSConfig is required")
}

// sequenceLB is a TCP load balancer that sends the i-th connection to
// backends[i], and after the list to the last two in turn.
type sequenceLB struct {
	ln       net.Listener
	mu       sync.Mutex
	n        int
	backends []string
}

func newSequenceLB(t *testing.T, backends ...string) *sequenceLB {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	lb := &sequenceLB{ln: ln, backends: backends}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			lb.mu.Lock()
			i := lb.n
			lb.n++
			lb.mu.Unlock()
			if i >= len(backends) {
				i = len(backends) - 2 + (i-len(backends))%2
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", backends[i])
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	return lb
}

func conns(h *harness) int {
	n := 0
	for _, c := range h.relay.Conns() {
		if c.ClusterID == clusterID {
			n++
		}
	}
	return n
}

// Behind a balancer that keeps sending an agent to one replica, the
// agent's two connections end up on both: the relays name themselves in
// the handshake, and the agent keeps trying until its connections differ.
func TestAgentSpreadsItsConnectionsOverReplicas(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, va := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true, relayCfg: func(c *tunnel.RelayConfig) { c.ReplicaID = "a" }})
	b, vb := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true, relayCfg: func(c *tunnel.RelayConfig) { c.ReplicaID = "b" }})
	va.count.Store(2)
	vb.count.Store(2)
	aAddr, bAddr := a.srv.Listener.Addr().String(), b.srv.Listener.Addr().String()
	// Four times to a, then b and a in turn.
	lb := newSequenceLB(t, aAddr, aAddr, aAddr, aAddr, bAddr, aAddr)
	a.startAgent(echo, harnessOpts{relayAddr: func(string) string { return lb.ln.Addr().String() }})

	var onA, onB int
	require.Eventually(t, func() bool { onA, onB = conns(a), conns(b); return onA == 1 && onB == 1 }, 30*time.Second, 10*time.Millisecond,
		"the agent's connections end up one on each replica")
	t.Logf("connections: a %d, b %d", onA, onB)
	// And it stays so: nothing more is dialed once they differ, but for
	// the other slot's attempt that may be under way as they come apart
	// (both slots were crowded on a, and each set out to move).
	lb.mu.Lock()
	dialed := lb.n
	lb.mu.Unlock()
	time.Sleep(500 * time.Millisecond)
	lb.mu.Lock()
	assert.LessOrEqual(t, lb.n-dialed, 1, "no more connections once spread")
	lb.mu.Unlock()
	assert.Equal(t, 1, conns(a), "still one on a")
	assert.Equal(t, 1, conns(b), "still one on b")
	resp, err := a.client().Get(a.url("/api"))
	require.NoError(t, err)
	decode(t, resp)
}

// An agent that connected while the fleet was one replica (or the
// replica's view of it was still loading) learns that it has grown, and
// spreads its connections over two replicas then.
func TestAgentSpreadsWhenTheFleetGrows(t *testing.T) {
	defer tunnel.SetFleetSizeEvery(50 * time.Millisecond)()
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, va := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true, relayCfg: func(c *tunnel.RelayConfig) { c.ReplicaID = "a" }})
	b, vb := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true, relayCfg: func(c *tunnel.RelayConfig) { c.ReplicaID = "b" }})
	va.count.Store(1)
	vb.count.Store(1)
	aAddr, bAddr := a.srv.Listener.Addr().String(), b.srv.Listener.Addr().String()
	// Four times to a, then b and a in turn.
	lb := newSequenceLB(t, aAddr, aAddr, aAddr, aAddr, bAddr, aAddr)
	a.startAgent(echo, harnessOpts{relayAddr: func(string) string { return lb.ln.Addr().String() }})
	require.Eventually(t, func() bool { return conns(a) == 2 }, 10*time.Second, 10*time.Millisecond, "both on a, a fleet of one")

	va.count.Store(2) // b joins
	vb.count.Store(2)
	require.Eventually(t, func() bool { return conns(a) == 1 && conns(b) == 1 }, 30*time.Second, 10*time.Millisecond,
		"the agent's connections end up one on each replica")
}

// A relay alone, or one that does not name itself, gets no extra dials.
func TestAgentAloneDoesNotRespread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemHarness(t, echo, func(c *tunnel.RelayConfig) { c.ReplicaID = "only" }, func(c *tunnel.AgentConfig) { c.Connections = 2 })
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.EqualValues(t, 2, h.relay.Stats().ConnectionsOpened, "two connections to the one relay in an hour, and no more")
	})
}

// A replica that drains asks its agents to move: the agent opens a new
// connection, which the balancer gives to another replica, and only then
// lets the old one go, whose request in flight finishes.
func TestDrainMovesAgentsToAnotherReplica(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	entered, release := make(chan struct{}), make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
			io.WriteString(w, "done")
			return
		}
		echo(w, r)
	})
	a, _ := startReplica(t, dir, fleet, fleet, handler, harnessOpts{noAgent: true, relayCfg: func(c *tunnel.RelayConfig) { c.ReplicaID = "a" }})
	b, _ := startReplica(t, dir, fleet, fleet, handler, harnessOpts{noAgent: true, relayCfg: func(c *tunnel.RelayConfig) { c.ReplicaID = "b" }})
	lb := newSequenceLB(t, a.srv.Listener.Addr().String(), b.srv.Listener.Addr().String(), b.srv.Listener.Addr().String())
	a.startAgent(handler, harnessOpts{relayAddr: func(string) string { return lb.ln.Addr().String() },
		agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 1 }})
	a.waitConnected(clusterID)

	slow := make(chan string, 1)
	go func() {
		resp, err := a.client().Get(a.url("/slow"))
		if err != nil {
			slow <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- string(body)
	}()
	<-entered
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		drained <- a.relay.Drain(ctx)
	}()
	require.Eventually(t, func() bool { return conns(b) == 1 }, 30*time.Second, 10*time.Millisecond, "the agent opened a connection to b")
	resp, err := b.client().Get(b.url("/api"))
	require.NoError(t, err)
	decode(t, resp)

	close(release)
	assert.Equal(t, "done", <-slow, "the request in flight on the draining replica finished")
	require.NoError(t, <-drained, "every agent connection left before the deadline")
	assert.Zero(t, conns(a))
}

// A replica forwards over one connection to each holder, as many
// requests at once as the holder's HTTP/2 allows, and opens another only
// when the one it has goes away.
func TestFleetKeepsOneConnectionToAReplica(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, _ := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true})
	_, vb := startReplica(t, dir, fleet, fleet, echo, harnessOpts{})

	get := func() {
		resp, err := a.client().Get(a.url("/api/v1/pods"))
		if assert.NoError(t, err) {
			decode(t, resp)
		}
	}
	for range 10 {
		get()
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(get)
	}
	wg.Wait()
	assert.EqualValues(t, 1, vb.accepted.Load(), "sequential and concurrent requests share one connection")

	vb.peer.CloseClientConnections() // as a holder that restarts its listener does
	get()
	assert.EqualValues(t, 2, vb.accepted.Load(), "a new connection once the first was closed")
	assert.EqualValues(t, 31, a.relay.Stats().PeerForwarded)
}

// A connection to a replica that nothing is forwarded over any more is
// closed after the idle timeout, and so is every one when the relay
// closes.
func TestFleetClosesIdlePeerConnections(t *testing.T) {
	defer tunnel.SetPeerIdleTimeout(200 * time.Millisecond)()
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, _ := startReplica(t, dir, fleet, fleet, echo, harnessOpts{noAgent: true})
	_, vb := startReplica(t, dir, fleet, fleet, echo, harnessOpts{})

	resp, err := a.client().Get(a.url("/api/v1/pods"))
	require.NoError(t, err)
	decode(t, resp)
	require.EqualValues(t, 1, vb.open.Load())
	require.Eventually(t, func() bool { return vb.open.Load() == 0 }, 5*time.Second, 20*time.Millisecond,
		"the idle connection was closed")

	resp, err = a.client().Get(a.url("/api/v1/pods"))
	require.NoError(t, err)
	decode(t, resp)
	assert.EqualValues(t, 2, vb.accepted.Load())
	a.relay.Close()
	require.Eventually(t, func() bool { return vb.open.Load() == 0 }, 5*time.Second, 20*time.Millisecond,
		"closing the relay closed its connection to the replica")
	resp, err = a.client().Get(a.url("/api/v1/pods"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "a closed relay forwards nothing")
}

// A download through another replica gets the window a download from an
// agent gets: it grows while the client reads, out of the forwarding
// replica's budget, and comes back when the download ends.
func TestFleetDownloadThroughAReplicaGrowsItsWindow(t *testing.T) {
	const budget = 256 << 10
	var written atomic.Int64
	ended := make(chan struct{})
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	a, _ := startReplica(t, dir, fleet, fleet, nil, harnessOpts{noAgent: true, relayCfg: func(c *tunnel.RelayConfig) {
		c.StreamWindowLimit = 4 << 20
		c.StreamWindowBudget = budget
	}})
	startReplica(t, dir, fleet, fleet, endless(&written, ended), harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 1 }})

	req, _ := http.NewRequest(http.MethodGet, "https://cluster/endless", nil)
	resp, err := a.relay.RoundTripper(clusterID).RoundTrip(req)
	require.NoError(t, err)
	var grown int64
	for range 64 {
		_, err = io.CopyN(io.Discard, resp.Body, 512<<10)
		require.NoError(t, err)
		grown = max(grown, a.relay.Stats().StreamWindowGrown)
	}
	assert.Positive(t, grown, "the window toward the holding replica grew")
	assert.LessOrEqual(t, grown, int64(budget))
	resp.Body.Close()
	<-ended
	assert.Zero(t, a.relay.Stats().StreamWindowGrown, "the stream gave its share back")
}

// whoAnswers is an upgrade handler that says which agent it is, and
// whether the relay let HeaderToAgent through.
func whoAnswers(agent string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, _ := http.NewResponseController(w).Hijack()
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
		fmt.Fprint(brw, agent)
		if r.Header.Get(tunnel.HeaderToAgent) != "" {
			fmt.Fprint(brw, " (saw the header)")
		}
		brw.Flush()
	})
}

// An upgrade naming an agent reaches that agent's connections and no
// other, on this replica or through the replica holding it: a session
// that re-attaches lives in one agent replica.
func TestUpgradeReachesTheAgentItNames(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	named := func(id string) harnessOpts {
		return harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.AgentID, c.Connections = id, 1 }}
	}
	a, _ := startReplica(t, dir, fleet, fleet, whoAnswers("agent-a"), named("agent-a"))
	b, _ := startReplica(t, dir, fleet, fleet, whoAnswers("agent-b"), named("agent-b"))

	for _, tc := range []struct {
		at     *harness
		to     string
		status int
		want   string
	}{
		{a, "agent-a", http.StatusSwitchingProtocols, "agent-a"},
		{a, "agent-b", http.StatusSwitchingProtocols, "agent-b"},
		{b, "agent-a", http.StatusSwitchingProtocols, "agent-a"},
		{b, "agent-b", http.StatusSwitchingProtocols, "agent-b"},
		{a, "agent-z", http.StatusServiceUnavailable, ""},
	} {
		for range 4 { // not by chance
			conn, err := tls.Dial("tcp", tc.at.srv.Listener.Addr().String(), &tls.Config{RootCAs: tc.at.roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
			require.NoError(t, err)
			req, _ := http.NewRequest(http.MethodGet, tc.at.url("/api/v1/namespaces/ns/pods/p/exec"), nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "echo/1")
			req.Header.Set(tunnel.HeaderToAgent, tc.to)
			require.NoError(t, req.Write(conn))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, req)
			require.NoError(t, err)
			require.Equal(t, tc.status, resp.StatusCode, "to %s", tc.to)
			if tc.want != "" {
				got, _ := io.ReadAll(br)
				assert.Equal(t, tc.want, string(got), "to %s", tc.to)
			}
			conn.Close()
		}
	}
}

// A black hole under an agent of a fleet: its one connection, on replica
// a, goes dark, and its new connection lands on b. GETs sent to a (which
// held the cluster) and to c (which forwards to a holder) while the path
// is dark are all answered 200: the replica a client reached asks the
// replicas holding the cluster to take its retry on a connection they
// have heard from lately, and b does. (Before, a waited for a new
// connection of its own, which never came, and answered 502.)
func TestFleetRetryFindsTheAgentsNewConnectionOnAnotherReplica(t *testing.T) {
	dir, fleet := &memDirectory{}, newPeerPKI(t, "fleet peer CA")
	// What is tested is where the retry goes, not how soon: on real
	// sockets and a loaded machine (the race detector, other packages'
	// tests beside this one) the agent's new connection can come later
	// than the default RetryWait after the relay's failure.
	slow := harnessOpts{noAgent: true, relayCfg: func(c *tunnel.RelayConfig) { c.RetryWait = 6 * time.Second }}
	a, _ := startReplica(t, dir, fleet, fleet, echo, slow)
	b, _ := startReplica(t, dir, fleet, fleet, echo, slow)
	c, _ := startReplica(t, dir, fleet, fleet, echo, slow)
	toA := newCutProxy(t, a.srv.Listener.Addr().String())
	bAddr := b.srv.Listener.Addr().String()
	lb := newSequenceLB(t, toA.addr(), bAddr, bAddr)
	a.startAgent(echo, harnessOpts{
		relayAddr: func(string) string { return lb.ln.Addr().String() },
		agentCfg:  func(cfg *tunnel.AgentConfig) { cfg.Connections = 1 },
	})
	a.waitConnected(clusterID)

	toA.freeze()
	fault := time.Now()
	type answer struct {
		via    string
		status int
		after  time.Duration
	}
	answers := make(chan answer)
	const each = 4
	for _, via := range []*harness{a, c} {
		for i := range each {
			go func() {
				time.Sleep(time.Duration(i) * time.Second)
				resp, err := via.client().Get(via.url("/into-the-black-hole"))
				if err != nil {
					answers <- answer{via.srv.Listener.Addr().String(), 0, time.Since(fault)}
					return
				}
				resp.Body.Close()
				answers <- answer{via.srv.Listener.Addr().String(), resp.StatusCode, time.Since(fault)}
			}()
		}
	}
	for range 2 * each {
		got := <-answers
		t.Logf("through %s: %d after %v", got.via, got.status, got.after.Round(time.Millisecond))
		assert.Equal(t, http.StatusOK, got.status, "through %s after %v", got.via, got.after)
	}
	assert.Equal(t, 1, conns(b), "the agent's new connection is on b")
}
