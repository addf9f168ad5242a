package tunnel_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/memnet"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// streamer writes a line, flushes, and then waits for release before the
// rest, so a test can act while a response is in flight.
func streamer(release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release:
			fmt.Fprintln(w, "last")
		case <-r.Context().Done():
		}
	})
}

func TestAgentConnectionKilledMidStream(t *testing.T) {
	release := make(chan struct{})
	var proxy *cutProxy
	h := newHarness(t, streamer(release), harnessOpts{
		agentCfg:  func(c *tunnel.AgentConfig) { c.Connections = 1 },
		relayAddr: func(relay string) string { proxy = newCutProxy(t, relay); return proxy.addr() },
	})
	resp, err := h.client().Get(h.url("/watch"))
	require.NoError(t, err)
	defer resp.Body.Close()
	lines := newLineReader(resp.Body)
	assert.Equal(t, "first", lines.next(t))

	proxy.cut() // the network between agent and relay dies mid-stream
	rest, err := io.ReadAll(resp.Body)
	assert.Error(t, err, "the client sees the stream break, not a clean end")
	assert.NotContains(t, string(rest), "last")

	// The agent reconnects by itself and the next request works.
	close(release)
	require.Eventually(t, func() bool {
		resp, err := h.client().Get(h.url("/again"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && string(b) == "first\nlast\n"
	}, 10*time.Second, 20*time.Millisecond)
	st := h.relay.Stats()
	assert.GreaterOrEqual(t, st.ConnectionsClosed, uint64(1), "the dead connection left the registry")
}

func TestRelayRestartAgentsReconnect(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{})
	addr := h.srv.Listener.Addr().String()
	cert := h.srv.TLS.Certificates

	// Stop the relay entirely: its listener and its tunnel connections.
	h.relay.Close()
	h.srv.Close()

	relay2, err := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{clusterID: secret}})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err, "the old relay's port is free again")
	srv2 := httptest.NewUnstartedServer(relay2)
	srv2.Listener.Close()
	srv2.Listener = ln
	srv2.TLS = h.srv.TLS.Clone()
	srv2.TLS.Certificates = cert
	srv2.EnableHTTP2 = true
	srv2.StartTLS()
	defer srv2.Close()

	require.Eventually(t, func() bool { return relay2.Connected(clusterID) }, 10*time.Second, 10*time.Millisecond,
		"the agent reconnects to the restarted relay by itself")
	resp, err := srv2.Client().Get(srv2.URL + "/clusters/" + clusterID + "/after-restart")
	require.NoError(t, err)
	assert.Equal(t, "/after-restart", decode(t, resp).Path)
}

func TestSlowReaderDoesNotStallOtherStreams(t *testing.T) {
	const big = 64 << 20
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(make([]byte, big)) // far more than any window
			return
		}
		fmt.Fprint(w, "quick")
	}), harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 1 }})

	slow, err := h.client().Get(h.url("/big"))
	require.NoError(t, err)
	defer slow.Body.Close()
	// Read a little and then nothing: the stream's windows fill up and the
	// handler blocks. The connection it shares must keep working.
	io.ReadFull(slow.Body, make([]byte, 1024))
	require.Eventually(t, func() bool { return h.relay.Stats().BytesFromAgent >= 4<<20 }, 10e9, 1e6,
		"the slow stream has filled the relay's window for it")

	for i := range 20 {
		resp, err := h.client().Get(h.url(fmt.Sprintf("/quick/%d", i)))
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, "quick", string(b))
	}
	n, err := io.Copy(io.Discard, slow.Body)
	require.NoError(t, err)
	assert.EqualValues(t, big-1024, n, "the slow stream was only delayed, not broken")
}

func TestStalledUploadDoesNotStallOtherStreams(t *testing.T) {
	stalled, started := make(chan struct{}), make(chan struct{})
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stalled" {
			close(started)
			<-stalled // never reads its body, like an exec whose stdin nobody reads
			return
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprint(w, len(b))
	}), harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 1 }})
	defer close(stalled)

	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	defer pw.Close()
	go h.client().Post(h.url("/stalled"), "application/octet-stream", pr)
	<-started
	require.Eventually(t, func() bool { return h.relay.Stats().BytesToAgent >= 256<<10 }, 10e9, 1e6,
		"the stalled stream holds a full stream window (256 KiB) of the agent's connection")

	for i := range 10 {
		resp, err := h.client().Post(h.url("/upload"), "text/plain", strings.NewReader(strings.Repeat("x", 1<<20)))
		require.NoError(t, err, "upload %d", i)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, fmt.Sprint(1<<20), string(b))
	}
}

func TestDrainFinishesInFlightStreams(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, streamer(release), harnessOpts{})
	resp, err := h.client().Get(h.url("/in-flight"))
	require.NoError(t, err)
	defer resp.Body.Close()
	lines := newLineReader(resp.Body)
	assert.Equal(t, "first", lines.next(t))

	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		drained <- h.agent.Shutdown(ctx)
	}()
	// The relay learns of the GOAWAY and routes nothing new to the agent.
	require.Eventually(t, func() bool {
		resp, err := h.client().Get(h.url("/new"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, 10*time.Second, 10*time.Millisecond)

	close(release)
	assert.Equal(t, "last", lines.next(t), "the in-flight stream finishes")
	require.NoError(t, <-drained)
}

func TestReconnectReplacesConnectionsWithoutDroppingStreams(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, streamer(release), harnessOpts{})
	require.Eventually(t, func() bool { return len(h.relay.Conns()) == 2 }, 10e9, 5e6)
	before := h.relay.Stats().ConnectionsOpened

	resp, err := h.client().Get(h.url("/in-flight"))
	require.NoError(t, err)
	defer resp.Body.Close()
	lines := newLineReader(resp.Body)
	assert.Equal(t, "first", lines.next(t))

	done := make(chan error, 1)
	go func() { done <- h.agent.Reconnect(context.Background()) }()
	require.Eventually(t, func() bool { return h.relay.Stats().ConnectionsOpened >= before+2 }, 10e9, 5e6)
	// New requests work while the old connection is draining.
	resp2, err := h.client().Get(h.url("/during"))
	require.NoError(t, err)
	resp2.Body.Close()
	assert.Equal(t, http.StatusOK, resp2.StatusCode)

	close(release)
	assert.Equal(t, "last", lines.next(t))
	require.NoError(t, <-done)
	require.Eventually(t, func() bool { return len(h.relay.Conns()) == 2 }, 10e9, 5e6, "the old connections leave the relay")
}

func TestThroughHTTPSProxyFromEnvironment(t *testing.T) {
	var connects atomic.Int32
	var relayAddr string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		if r.Host != "example.com:"+relayAddr[strings.LastIndex(relayAddr, ":")+1:] {
			http.Error(w, "unexpected target "+r.Host, http.StatusForbidden)
			return
		}
		connects.Add(1)
		up, err := net.Dial("tcp", relayAddr) // example.com is the relay here
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		down, brw, _ := http.NewResponseController(w).Hijack()
		io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { io.Copy(up, brw); up.Close() }()
		io.Copy(down, up)
		down.Close()
	}))
	defer proxy.Close()
	t.Setenv("HTTPS_PROXY", proxy.URL)
	t.Setenv("NO_PROXY", "")

	h := newHarness(t, echo, harnessOpts{
		agentCfg: func(c *tunnel.AgentConfig) { c.Proxy = nil }, // from the environment
		relayAddr: func(relay string) string {
			relayAddr = relay
			return "example.com:" + relay[strings.LastIndex(relay, ":")+1:]
		},
	})
	resp, err := h.client().Get(h.url("/via-proxy"))
	require.NoError(t, err)
	assert.Equal(t, "/via-proxy", decode(t, resp).Path)
	assert.GreaterOrEqual(t, connects.Load(), int32(1), "the agent went through the proxy")
}

// A relay that accepts the connection and never answers does not hold the
// agent: each handshake times out after HandshakeTimeout and the agent
// tries again after its backoff.
func TestHandshakeTimeoutRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		ln := n.Listen(memRelay)
		var attempts atomic.Int32
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				attempts.Add(1)
				defer c.Close() // accept, then say nothing at all
			}
		}()
		agent, err := tunnel.NewAgent(&tunnel.AgentConfig{RelayURL: "https://" + memRelay, ClusterID: clusterID, Connections: 1,
			Credential: tunnel.SecretCredential(secret), Handler: echo, Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }, DialContext: n.Dial})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); agent.Run(ctx) }()

		time.Sleep(tunnel.DefaultAgentHandshakeTimeout - time.Millisecond)
		synctest.Wait()
		assert.EqualValues(t, 1, attempts.Load(), "one attempt, still waiting for its answer")
		time.Sleep(2 * (tunnel.DefaultAgentHandshakeTimeout + tunnel.DefaultMaxBackoff))
		synctest.Wait()
		assert.GreaterOrEqual(t, attempts.Load(), int32(3), "it timed out and tried again, twice")
		assert.Zero(t, agent.Stats().ConnectionsOpened)
		cancel()
		<-done
		ln.Close()
	})
}

// With every stream slot taken, a new request is refused at once.
func TestStreamLimitAnswers503NotHang(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	h := newHarness(t, streamer(release), harnessOpts{agentCfg: func(c *tunnel.AgentConfig) {
		c.Connections = 1
		c.MaxConcurrentStreams = 2
	}})
	for range 2 {
		resp, err := h.client().Get(h.url("/hold"))
		require.NoError(t, err)
		defer resp.Body.Close()
	}
	resp, err := h.client().Get(h.url("/one-too-many"))
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
}

// A header list the relay's front end accepts from an HTTP/1.1 client can
// count for more in HTTP/2 (32 bytes a field). It is answered 431 with a
// Status, never sent to the agent, and the tunnel keeps serving.
func TestOversizedHeaderListGets431(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{})
	tr := h.client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	client := &http.Client{Transport: tr}

	req, err := http.NewRequest(http.MethodGet, h.url("/api"), nil)
	require.NoError(t, err)
	for i := range 40000 { // about 0.5 MB as HTTP/1.1, 1.7 MB as HTTP/2 counts it
		req.Header.Set(fmt.Sprintf("X-%d", i), "v")
	}
	before := h.relay.Stats().StreamsOpened
	resp, err := client.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode, "%s", body)
	var st struct{ Kind, Message string }
	require.NoError(t, json.Unmarshal(body, &st), "%s", body)
	assert.Equal(t, "Status", st.Kind)
	assert.Contains(t, st.Message, "request header list too large")
	assert.Equal(t, before, h.relay.Stats().StreamsOpened, "no stream was opened for it")

	resp, err = client.Get(h.url("/api"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the tunnel still serves")
}

// An agent set to accept less than the relay sends: x/net refuses the
// request before sending it, and the client still gets 431, not 502.
func TestHeaderListOverALowerAgentLimitGets431(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.MaxHeaderBytes = 16 << 10 }})
	req, err := http.NewRequest(http.MethodGet, h.url("/api"), nil)
	require.NoError(t, err)
	req.Header.Set("X-Big", strings.Repeat("a", 32<<10))
	resp, err := h.client().Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode, "%s", body)
	assert.Contains(t, string(body), "accepts less than this relay's")
}

// Close stops the relay: connections drop, agents are refused, clients
// and importers are told it is closed.
func TestCloseStopsTheRelay(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{})
	require.NoError(t, h.relay.Close())
	require.Eventually(t, func() bool { return !h.relay.Connected(clusterID) }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return h.relay.Stats().HandshakeFailures["relay-closed"] >= 2 }, 10*time.Second, 5*time.Millisecond,
		"the agent keeps trying and is refused: %v", h.relay.Stats().HandshakeFailures)
	assert.False(t, h.relay.Connected(clusterID))

	resp, err := h.client().Get(h.url("/api"))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, string(body), "the relay is shutting down")

	_, err = h.relay.DialContext(context.Background(), clusterID)
	assert.ErrorIs(t, err, tunnel.ErrRelayClosed)
	_, err = (&http.Client{Transport: h.relay.RoundTripper(clusterID)}).Get("https://cluster/api")
	assert.ErrorIs(t, err, tunnel.ErrRelayClosed)
}

// A server that keeps agents and clients apart mounts AgentHandler and
// ClusterHandler where it likes.
func TestAgentAndClusterHandlersMountAnywhere(t *testing.T) {
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{clusterID: secret}})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/private/agents", relay.AgentHandler())
	mux.Handle("/clusters/", relay.ClusterHandler())
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = quietLog
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() { relay.Close(); srv.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	h := &harness{t: t, relay: relay, srv: srv, roots: roots}
	h.startAgent(echo, harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.RelayURL = srv.URL + "/private/agents" }})
	h.waitConnected(clusterID)

	resp, err := srv.Client().Get(srv.URL + "/clusters/" + clusterID + "/api/v1/namespaces")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), "/api/v1/namespaces")
}

// When an agent dies, every request in flight on it fails at once, on all
// of its connections. A body-less GET is retried, and the retry must go to
// another agent: another connection of the dead one would fail the same
// way, before the relay has noticed it is gone.
func TestRetrySkipsEveryConnectionOfADeadAgent(t *testing.T) {
	var inA atomic.Int64
	dying := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inA.Add(1)
		<-r.Context().Done() // answers nothing before its agent dies
	})
	h, proxy := agentsAAndB(t, dying, 4)

	const n = 40
	var answered atomic.Int64
	results := make(chan string, n)
	for range n {
		go func() {
			resp, err := h.client().Get(h.url("/get"))
			if err != nil {
				results <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answered.Add(1)
			results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	// Every request is either answered by B or held by A.
	require.Eventually(t, func() bool { return answered.Load()+inA.Load() == n }, 10*time.Second, 5*time.Millisecond)
	require.Positive(t, inA.Load())

	proxy.ln.Close() // agent A does not come back
	proxy.cut()      // and all its connections die at once
	for range n {
		assert.Equal(t, "200 B", <-results)
	}
}

// An agent that dies after the headers of a small answer and before its
// end: the relay had not passed any of it on, so the GET goes to the other
// agent and the client gets a whole answer, not a reset stream.
func TestRetryWhenAnAgentDiesMidAnswer(t *testing.T) {
	var inA atomic.Int64
	dying := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "part of it")
		w.(http.Flusher).Flush()
		inA.Add(1)
		<-r.Context().Done() // the rest never comes: its agent dies
	})
	h, proxy := agentsAAndB(t, dying, 1)

	const n = 20
	results := make(chan string, n)
	for range n {
		go func() {
			resp, err := h.client().Get(h.url("/get"))
			if err != nil {
				results <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				results <- err.Error()
				return
			}
			results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	require.Eventually(t, func() bool { return inA.Load() > 0 }, 10*time.Second, 5*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // let the rest be answered or held
	proxy.ln.Close()
	proxy.cut()
	for range n {
		assert.Equal(t, "200 B", <-results)
	}
}

// agentsAAndB starts agent A (serving with dying, with conns connections,
// behind a proxy the test can cut) and agent B (one connection, answering
// "B") for one cluster, and waits until the relay holds all of them.
func agentsAAndB(t *testing.T, dying http.Handler, conns int) (*harness, *cutProxy) {
	t.Helper()
	var proxy *cutProxy
	h := newHarness(t, dying, harnessOpts{
		agentCfg:  func(c *tunnel.AgentConfig) { c.Connections = conns; c.AgentID = "agent-a" },
		relayAddr: func(relay string) string { proxy = newCutProxy(t, relay); return proxy.addr() },
	})
	second, err := tunnel.NewAgent(h.agentConfig(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "B")
	}), harnessOpts{agentCfg: func(c *tunnel.AgentConfig) { c.Connections = 1; c.AgentID = "agent-b" }}))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); second.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return len(h.relay.Conns()) == conns+1 }, 10*time.Second, 5*time.Millisecond)
	return h, proxy
}
