package tunnel_test

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// An in-memory network for tests under testing/synctest, as x/net's
// HTTP/2 tests have: a connection's writes never block (each direction is
// an unbounded buffer) and its reads wait on channels made in the bubble,
// so that a bubble whose goroutines all wait on the network is idle and
// its clock moves on. A network can be frozen: nothing written reaches
// the other side until it thaws, as when packets are dropped.

// memNet is one network: listeners by address, and a switch to freeze it.
type memNet struct {
	mu    sync.Mutex
	ln    map[string]*memListener
	pipes map[string][]*memPipe // by who dialed
	down  bool                  // dials are refused
}

func newMemNet() *memNet {
	return &memNet{ln: map[string]*memListener{}, pipes: map[string][]*memPipe{}}
}

// listen returns a listener at addr.
func (n *memNet) listen(addr string) *memListener {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := &memListener{net: n, addr: memAddr(addr), conns: make(chan net.Conn), done: make(chan struct{})}
	n.ln[addr] = l
	return l
}

// dial connects to the listener at addr, as nobody in particular.
func (n *memNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.dialAs("")(ctx, network, addr)
}

// dialAs returns a dialer whose connections freeze can name by who.
func (n *memNet) dialAs(who string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return n.connect(ctx, who, addr) }
}

func (n *memNet) connect(ctx context.Context, who, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.ln[addr]
	a, b := newMemPipe(), newMemPipe()
	n.pipes[who] = append(n.pipes[who], a, b)
	down := n.down
	n.mu.Unlock()
	if l == nil || down {
		return nil, &net.OpError{Op: "dial", Net: "mem", Err: os.ErrNotExist}
	}
	client := &memConn{r: a, w: b, local: "client", remote: l.addr}
	server := &memConn{r: b, w: a, local: l.addr, remote: "client"}
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// freeze stops the bytes of every connection who has open now until
// thaw, as a path whose packets are dropped; connections opened later
// work.
func (n *memNet) freeze(who string) (thaw func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	pipes := n.pipes[who]
	for _, p := range pipes {
		p.setFrozen(true)
	}
	return func() {
		for _, p := range pipes {
			p.setFrozen(false)
		}
	}
}

// cut ends every connection who has open now, as a relay that goes away
// does, and refuses new ones until back is called.
func (n *memNet) cut(who string) (back func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down = true
	for _, p := range n.pipes[who] {
		p.close()
	}
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.down = false
	}
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

type memListener struct {
	net   *memNet
	addr  memAddr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *memListener) Addr() net.Addr { return l.addr }

// memPipe is one direction of a connection.
type memPipe struct {
	mu     sync.Mutex
	buf    []byte
	eof    bool // the writer closed
	frozen bool // written bytes wait in held
	held   []byte
	wake   chan struct{} // a token when there is something new
}

func newMemPipe() *memPipe { return &memPipe{wake: make(chan struct{}, 1)} }

func (p *memPipe) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *memPipe) write(b []byte) {
	p.mu.Lock()
	if p.frozen {
		p.held = append(p.held, b...)
	} else {
		p.buf = append(p.buf, b...)
	}
	p.mu.Unlock()
	p.signal()
}

func (p *memPipe) setFrozen(f bool) {
	p.mu.Lock()
	p.frozen = f
	if !f {
		p.buf, p.held = append(p.buf, p.held...), nil
	}
	p.mu.Unlock()
	p.signal()
}

func (p *memPipe) close() {
	p.mu.Lock()
	p.eof = true
	p.mu.Unlock()
	p.signal()
}

// memConn is one end of a connection: it reads r and writes w.
type memConn struct {
	r, w          *memPipe
	local, remote memAddr

	mu       sync.Mutex
	closed   bool
	done     chan struct{}
	deadline chan struct{} // closed when the read deadline passes
	changed  chan struct{} // closed when the read deadline is set anew
	timer    *time.Timer
}

func (c *memConn) init() {
	if c.done == nil {
		c.done, c.changed = make(chan struct{}), make(chan struct{})
	}
}

func (c *memConn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		c.init()
		done, deadline, changed, closed := c.done, c.deadline, c.changed, c.closed
		c.mu.Unlock()
		if closed {
			return 0, net.ErrClosed
		}
		select {
		case <-deadline:
			return 0, os.ErrDeadlineExceeded
		default:
		}
		c.r.mu.Lock()
		if len(c.r.buf) > 0 {
			n := copy(b, c.r.buf)
			c.r.buf = c.r.buf[n:]
			more := len(c.r.buf) > 0
			c.r.mu.Unlock()
			if more {
				c.r.signal()
			}
			return n, nil
		}
		eof := c.r.eof && !c.r.frozen
		c.r.mu.Unlock()
		if eof {
			return 0, io.EOF
		}
		select {
		case <-c.r.wake:
		case <-done:
		case <-changed: // a reader waiting on the old deadline looks again
		case <-deadline:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

func (c *memConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	c.w.write(b)
	return len(b), nil
}

func (c *memConn) Close() error {
	c.mu.Lock()
	c.init()
	if !c.closed {
		c.closed = true
		close(c.done)
		if c.timer != nil {
			c.timer.Stop()
		}
	}
	c.mu.Unlock()
	c.w.close()
	c.r.close()
	return nil
}

func (c *memConn) CloseWrite() error { c.w.close(); return nil }

func (c *memConn) LocalAddr() net.Addr  { return c.local }
func (c *memConn) RemoteAddr() net.Addr { return c.remote }

func (c *memConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetWriteDeadline is accepted and has no effect: writes never block.
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	close(c.changed)
	c.changed = make(chan struct{})
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.deadline = nil
	if t.IsZero() {
		return nil
	}
	ch := make(chan struct{})
	c.deadline = ch
	if d := time.Until(t); d <= 0 {
		close(ch)
	} else {
		c.timer = time.AfterFunc(d, func() { close(ch) })
	}
	return nil
}

// memHarness is a relay and an agent on a memNet, to be made and used
// inside a synctest bubble.
type memHarness struct {
	t     *testing.T
	net   *memNet
	relay *tunnel.Relay
	agent *tunnel.Agent
	roots *x509.CertPool
	srv   *http.Server
	stop  context.CancelFunc
	done  chan struct{}
}

const memRelay = "relay.test:443"

// newMemHarness starts a relay serving on the in-memory network, and an
// agent connected to it, with the configs' defaults unless the funcs
// change them; everything stops when the bubble's test ends.
func newMemHarness(t *testing.T, handler http.Handler, relayCfg func(*tunnel.RelayConfig), agentCfg func(*tunnel.AgentConfig)) *memHarness {
	t.Helper()
	ca, err := pki.NewCA("mem test CA")
	require.NoError(t, err)
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: []string{"relay.test"}, Server: true})
	require.NoError(t, err)
	cert, err := leaf.TLSCertificate()
	require.NoError(t, err)
	h := &memHarness{t: t, net: newMemNet(), roots: ca.Pool(), done: make(chan struct{})}
	rc := &tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{clusterID: secret}, Logger: testLogger(t)}
	if relayCfg != nil {
		relayCfg(rc)
	}
	h.relay, err = tunnel.NewRelay(rc)
	require.NoError(t, err)
	h.srv = &http.Server{Handler: h.relay, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ErrorLog: quietLog}
	require.NoError(t, tunnel.ConfigureServer(h.srv))
	ln := h.net.listen(memRelay)
	go h.srv.ServeTLS(ln, "", "")

	ac := &tunnel.AgentConfig{RelayURL: "https://" + memRelay, ClusterID: clusterID, Credential: tunnel.SecretCredential(secret),
		Handler: handler, TLSConfig: &tls.Config{RootCAs: h.roots}, Proxy: func(*http.Request) (*url.URL, error) { return nil, nil },
		Logger: testLogger(t)}
	if agentCfg != nil {
		agentCfg(ac)
	}
	h.agent, err = tunnel.NewAgent(ac)
	require.NoError(t, err)
	tunnel.SetAgentDialer(h.agent, h.net.dialAs("agent"))
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() { defer close(h.done); h.agent.Run(ctx) }()
	t.Cleanup(h.close)
	// Held writes (hold.For) need the clock to move: wait in small steps
	// of fake time for every connection the agent keeps.
	want := cmp.Or(ac.Connections, tunnel.DefaultConnections)
	for start := time.Now(); len(h.relay.Conns()) < want; time.Sleep(time.Millisecond) {
		require.Less(t, time.Since(start), time.Minute, "the agent never connected")
	}
	return h
}

func (h *memHarness) close() {
	h.stop()
	<-h.done
	h.relay.Close()
	h.srv.Close()
	synctest.Wait()
}

// client is an HTTP/2 client of the relay on the in-memory network.
func (h *memHarness) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: h.net.dial, TLSClientConfig: &tls.Config{RootCAs: h.roots}, ForceAttemptHTTP2: true,
	}}
}

func (h *memHarness) url(path string) string {
	return "https://" + memRelay + "/clusters/" + clusterID + path
}
