package tunnel_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

const (
	clusterID = "test-cluster"
	secret    = "s3cret-for-test-cluster"
)

// harness is a relay behind a TLS test server and an agent connected to it.
type harness struct {
	t       testing.TB
	relay   *tunnel.Relay
	srv     *httptest.Server
	roots   *x509.CertPool
	agent   *tunnel.Agent
	stop    context.CancelFunc
	stopped chan struct{}
}

type harnessOpts struct {
	auth     tunnel.Authenticator
	agentCfg func(*tunnel.AgentConfig)
	relayCfg func(*tunnel.RelayConfig)
	noAgent  bool
	// relayAddr, when set, is where agents dial instead of the relay
	// itself (a cuttable proxy in front of it).
	relayAddr func(relay string) string
	// listener, when set, wraps the relay's TCP listener (under TLS), as
	// the relay binary wraps its own with ClientListener.
	listener func(net.Listener) net.Listener
}

var quietLog = log.New(io.Discard, "", 0)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TUNNEL_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

func newHarness(t testing.TB, handler http.Handler, o harnessOpts) *harness {
	t.Helper()
	if o.auth == nil {
		o.auth = tunnel.SecretAuthenticator{clusterID: secret}
	}
	rcfg := &tunnel.RelayConfig{Authenticator: o.auth, Logger: testLogger(t)}
	if o.relayCfg != nil {
		o.relayCfg(rcfg)
	}
	relay, err := tunnel.NewRelay(rcfg)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(relay)
	srv.Config.ErrorLog = quietLog
	srv.EnableHTTP2 = true
	// As in production: a client's stalled upload must not take the whole
	// connection's receive window (net/http's default makes them equal).
	srv.Config.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 20, MaxReceiveBufferPerConnection: 32 << 20}
	require.NoError(t, tunnel.ConfigureServer(srv.Config))
	if o.listener != nil {
		srv.Listener = o.listener(srv.Listener)
	}
	srv.StartTLS()
	t.Cleanup(func() { relay.Close(); srv.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	h := &harness{t: t, relay: relay, srv: srv, roots: roots}
	if !o.noAgent {
		h.startAgent(handler, o)
		h.waitConnected(clusterID)
	}
	return h
}

func (h *harness) agentConfig(handler http.Handler, o harnessOpts) *tunnel.AgentConfig {
	relayURL := h.srv.URL + tunnel.DefaultAgentPath
	if o.relayAddr != nil {
		relayURL = "https://" + o.relayAddr(h.srv.Listener.Addr().String()) + tunnel.DefaultAgentPath
	}
	cfg := &tunnel.AgentConfig{
		RelayURL:   relayURL,
		ClusterID:  clusterID,
		Credential: tunnel.SecretCredential(secret),
		Handler:    handler,
		TLSConfig:  &tls.Config{RootCAs: h.roots, ServerName: "example.com"},
		Proxy:      func(*http.Request) (*url.URL, error) { return nil, nil },
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		Logger:     testLogger(h.t),
	}
	if o.agentCfg != nil {
		o.agentCfg(cfg)
	}
	return cfg
}

func (h *harness) startAgent(handler http.Handler, o harnessOpts) {
	h.t.Helper()
	agent, err := tunnel.NewAgent(h.agentConfig(handler, o))
	require.NoError(h.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h.agent, h.stop, h.stopped = agent, cancel, make(chan struct{})
	go func() { defer close(h.stopped); agent.Run(ctx) }()
	h.t.Cleanup(func() { cancel(); <-h.stopped })
}

// waitConnected waits until the relay has as many connections for the
// cluster as the agent keeps (2 by default).
func (h *harness) waitConnected(id string) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		n := 0
		for _, c := range h.relay.Conns() {
			if c.ClusterID == id {
				n++
			}
		}
		return n >= 1 && h.relay.Connected(id)
	}, 10*time.Second, 5*time.Millisecond, "agent never connected")
}

// client returns an HTTP client for the relay; it speaks HTTP/2 to it.
func (h *harness) client() *http.Client { return h.srv.Client() }

func (h *harness) url(path string) string { return h.srv.URL + "/clusters/" + clusterID + path }

// cutProxy forwards TCP connections to a target and can cut them all at
// once, as a failing network would.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	frozen chan struct{} // while non-nil, no byte is forwarded
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { p.forward(up, c); up.Close() }()
			go func() { p.forward(c, up); c.Close() }()
		}
	}()
	return p
}

// forward copies src to dst, holding bytes back while the proxy is frozen.
func (p *cutProxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		frozen := p.frozen
		p.mu.Unlock()
		if frozen != nil {
			<-frozen
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// freeze stops forwarding without closing anything, as a network path that
// silently drops packets; the returned func thaws it.
func (p *cutProxy) freeze() (thaw func()) {
	c := make(chan struct{})
	p.mu.Lock()
	p.frozen = c
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		p.frozen = nil
		p.mu.Unlock()
		close(c)
	}
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
