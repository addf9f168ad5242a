package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ClientListenerConfig says how ClientListener treats the connections of
// a relay's clients. The zero value changes nothing but the timeouts.
type ClientListenerConfig struct {
	// SendBuffer fixes each connection's kernel send buffer, in bytes (at
	// most net.core.wmem_max; Linux reserves twice that for its own
	// bookkeeping). Zero leaves the kernel's autotuning, under which one
	// client that stops reading can hold megabytes of kernel memory (up
	// to net.ipv4.tcp_wmem's maximum), and a thousand such clients push
	// the whole machine into TCP memory pressure, slowing every
	// connection on it. A fixed buffer also caps one connection's
	// throughput at about SendBuffer per round trip. The relay binary
	// uses DefaultClientSendBuffer.
	SendBuffer int

	// WriteTimeout bounds how long the kernel keeps bytes a client does
	// not take: data unacknowledged this long ends the connection
	// (TCP_USER_TIMEOUT, which counts a zero receive window too; Linux
	// only). That covers what the relay's own write timeout cannot see:
	// a response small enough to fit the send buffer, finished as far as
	// the relay knows, that the client never reads while the connection
	// idles and closes. Default DefaultWriteTimeout.
	WriteTimeout time.Duration

	// MaxConns bounds the client connections open at once, authenticated
	// or not: each holds a goroutine, buffers and a descriptor before any
	// request is read. Past it, a new connection is reset as soon as it
	// is accepted, and OnRefused, if set, is called. Zero means no bound.
	// A connection on which a Relay accepted an agent's handshake stops
	// counting: agents connected in their thousands must not take the
	// places of clients, nor callers that fill those places keep agents
	// from coming back (RelayConfig.MaxConnsPerCluster bounds agents).
	MaxConns  int
	OnRefused func()

	// MaxHandshakes bounds the TLS handshakes computed at once on this
	// listener's connections; past it, a connection whose whole
	// ClientHello has arrived waits its turn, first come first served,
	// until its read deadline (an HTTP server's handshake timeout). A
	// connection that has sent nothing, or part of a ClientHello, takes
	// no place; one the server asks for another ClientHello (a
	// HelloRetryRequest) gives its place back meanwhile and waits again
	// once the second has arrived whole. A handshake is the most a caller
	// can make a relay compute before it shows a credential; bounded, a
	// flood of them leaves the relay's other cores to the requests it
	// already carries. Zero means no bound. It takes effect through the
	// server's tls.Config passed through [LimitHandshakes].
	// OnHandshakeExpired, if set, is called for each handshake whose wait
	// ended at its deadline: many mean the bound is too low for the
	// handshakes the listener is sent.
	MaxHandshakes      int
	OnHandshakeExpired func()
}

// ClientListener wraps the listener a relay serves its clients on, for
// what only the socket can do: the limits of ClientListenerConfig, and a
// connection closed after a write to it timed out (the relay's
// WriteTimeout, or an HTTP/2 server's WriteByteTimeout) is reset rather
// than closed gracefully, so the kernel drops the bytes its client never
// read at once. Under a server set up with ConfigureServer (and TLS),
// its connections also let the relay send the TLS records of each of its
// writes to a client in one system call.
func ClientListener(ln net.Listener, c ClientListenerConfig) net.Listener {
	l := &clientListener{Listener: ln, cfg: c,
		userTimeout: int(orDefault(c.WriteTimeout, DefaultWriteTimeout).Milliseconds())}
	if c.MaxHandshakes > 0 {
		l.handshakes = make(chan struct{}, c.MaxHandshakes)
	}
	return l
}

type clientListener struct {
	net.Listener
	cfg         ClientListenerConfig
	userTimeout int // milliseconds
	open        atomic.Int64
	handshakes  chan struct{} // a place per handshake computed; nil: no bound
	waiting     atomic.Int32  // handshakes waiting for a place
	writes      *atomic.Int64 // counts writes to clients' sockets, when tests set it
}

func (l *clientListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			return c, nil
		}
		if l.cfg.MaxConns > 0 && l.open.Load() >= int64(l.cfg.MaxConns) {
			// Counted before the reset, so that whoever sees the reset
			// sees the count.
			if l.cfg.OnRefused != nil {
				l.cfg.OnRefused()
			}
			tc.SetLinger(0)
			tc.Close()
			continue
		}
		l.open.Add(1)
		if l.cfg.SendBuffer > 0 {
			tc.SetWriteBuffer(l.cfg.SendBuffer)
		}
		setUserTimeout(tc, l.userTimeout)
		cc := &clientConn{TCPConn: tc, l: l}
		cc.batch.small = true
		if l.handshakes != nil {
			cc.turn = &handshakeTurn{}
		}
		return cc, nil
	}
}

// clientConn counts itself open until closed, and remembers whether a
// write timed out, to reset on Close. Under a server that ConfigureServer
// set up, it sends the records of each of the relay's writes to the
// client in one: each of the HTTP/2 server's (clientTLS), each of an
// HTTP/1.x answer's copy (clientWriter).
type clientConn struct {
	*net.TCPConn
	l        *clientListener
	timedOut atomic.Bool
	once     sync.Once
	turn     *handshakeTurn // nil without MaxHandshakes
	batch    recordBatch
}

// handshakeTurn is a connection's handshake under MaxHandshakes.
type handshakeTurn struct {
	readDeadline atomic.Int64 // in force, UnixNano; 0 for none
	state        atomic.Int32 // handshakeNone, handshakeHeld, handshakeRetry, handshakeDone

	// closed is made for a handshake while it waits for its place, and
	// closed if the connection closes meanwhile; a connection that
	// waits for nothing keeps none. isClosed says whether it has closed.
	mu       sync.Mutex
	closed   chan struct{}
	isClosed bool

	retry *helloScan // the second ClientHello, after a HelloRetryRequest
}

const (
	handshakeNone  = iota
	handshakeHeld  // computing, in a place
	handshakeRetry // asked the client for another ClientHello, and gave the place back
	handshakeDone
)

// Read takes a place for a handshake the server asked to begin again
// (HelloRetryRequest), once the client's whole second ClientHello has
// arrived: the server computes the handshake on it before its next
// write, so that a client that makes the server ask again is bounded
// as every other, and one that then sends nothing holds no place.
func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	if t := c.turn; t != nil && n > 0 && t.state.Load() == handshakeRetry && t.retry.feed(p[:n]) {
		if werr := c.waitHandshake(context.Background(), handshakeRetry); werr != nil {
			return 0, werr
		}
	}
	return n, err
}

func (c *clientConn) Write(p []byte) (int, error) { return c.batch.write(p, c.writeThrough) }

func (c *clientConn) writeThrough(p []byte) (int, error) {
	// A TLS server's first write answers the ClientHello, once the
	// handshake's costly part (key exchange, signature) is done; or asks
	// for another ClientHello, before any of it.
	if t := c.turn; t != nil && t.state.Load() == handshakeHeld {
		if isHelloRetryRequest(p) {
			t.retry = new(helloScan) // read by the same goroutine, the handshake's
			if t.state.CompareAndSwap(handshakeHeld, handshakeRetry) {
				<-c.l.handshakes
			}
		} else {
			c.giveBackHandshake()
		}
	}
	if w := c.l.writes; w != nil {
		w.Add(1)
	}
	n, err := c.TCPConn.Write(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.timedOut.Store(true)
	}
	return n, err
}

func (c *clientConn) Close() error {
	if c.timedOut.Load() {
		c.TCPConn.SetLinger(0)
	}
	err := c.TCPConn.Close()
	c.leaveBound()
	if t := c.turn; t != nil {
		t.close()
		c.giveBackHandshake()
	}
	return err
}

// SetDeadline and SetReadDeadline note the read deadline, which bounds
// how long a handshake waits for its place.
func (c *clientConn) SetDeadline(t time.Time) error {
	c.noteReadDeadline(t)
	return c.TCPConn.SetDeadline(t)
}

func (c *clientConn) SetReadDeadline(t time.Time) error {
	c.noteReadDeadline(t)
	return c.TCPConn.SetReadDeadline(t)
}

func (c *clientConn) noteReadDeadline(t time.Time) {
	if c.turn == nil {
		return
	}
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.turn.readDeadline.Store(ns)
}

// ErrHandshakeWait is the error of a TLS handshake that found no place
// under ClientListenerConfig.MaxHandshakes before its deadline.
var ErrHandshakeWait = errors.New("tunnel: no place for the TLS handshake before its deadline: too many at once")

// waitHandshake takes a place for c's handshake, in state from
// (handshakeNone or handshakeRetry), waiting for one until ctx ends, c's
// read deadline passes or c is closed.
func (c *clientConn) waitHandshake(ctx context.Context, from int32) error {
	t := c.turn
	if t.state.Load() != from {
		return nil
	}
	select {
	case c.l.handshakes <- struct{}{}:
	default:
		var expired <-chan time.Time
		if d := t.readDeadline.Load(); d != 0 {
			timer := time.NewTimer(time.Until(time.Unix(0, d)))
			defer timer.Stop()
			expired = timer.C
		}
		c.l.waiting.Add(1)
		defer c.l.waiting.Add(-1)
		defer t.forgetClosedChan()
		select {
		case c.l.handshakes <- struct{}{}:
		case <-expired:
			if c.l.cfg.OnHandshakeExpired != nil {
				c.l.cfg.OnHandshakeExpired()
			}
			return ErrHandshakeWait
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.closedChan():
			return net.ErrClosed
		}
	}
	if !t.state.CompareAndSwap(from, handshakeHeld) {
		<-c.l.handshakes // closed meanwhile
		return net.ErrClosed
	}
	return nil
}

// closedChan is closed once the connection is.
func (t *handshakeTurn) closedChan() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed == nil {
		t.closed = make(chan struct{})
		if t.isClosed {
			close(t.closed)
		}
	}
	return t.closed
}

// forgetClosedChan drops a wait's channel once the wait is over: the
// connection may live for days after its handshake.
func (t *handshakeTurn) forgetClosedChan() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.isClosed {
		t.closed = nil
	}
}

func (t *handshakeTurn) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.isClosed && t.closed != nil {
		close(t.closed)
	}
	t.isClosed = true
}

// giveBackHandshake gives c's handshake place back, once.
func (c *clientConn) giveBackHandshake() {
	if c.turn.state.Swap(handshakeDone) == handshakeHeld {
		<-c.l.handshakes
	}
}

// LimitHandshakes returns a copy of cfg under which a connection from a
// ClientListener with MaxHandshakes waits for a place before its
// handshake is computed: at GetConfigForClient, once its whole
// ClientHello has arrived. Other connections are not delayed. cfg's own
// GetConfigForClient, if any, runs after the wait.
func LimitHandshakes(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	next := cfg.GetConfigForClient
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if cc, ok := hello.Conn.(*clientConn); ok && cc.turn != nil {
			if err := cc.waitHandshake(hello.Context(), handshakeNone); err != nil {
				return nil, err
			}
		}
		if next != nil {
			return next(hello)
		}
		return nil, nil
	}
	return c
}

// helloRetryRequestRandom is the Random of a ServerHello that is a
// HelloRetryRequest (RFC 8446, section 4.1.3).
var helloRetryRequestRandom = []byte{
	0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
	0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
}

// isHelloRetryRequest reports whether p begins with a handshake record
// holding a HelloRetryRequest: record header (5 bytes), ServerHello's
// type and length (4), legacy version (2), then the Random.
func isHelloRetryRequest(p []byte) bool {
	return len(p) >= 43 && p[0] == 22 && p[5] == 2 && bytes.Equal(p[11:43], helloRetryRequestRandom)
}

// helloScan follows the TLS records a client sends after a
// HelloRetryRequest (a ChangeCipherSpec it may send first, then its
// ClientHello, in as many records as it likes) until the whole
// ClientHello has arrived.
type helloScan struct {
	hdr     [5]byte // the record header being read
	hdrN    int
	left    int // bytes of the current record's payload still to come
	msg     [4]byte
	msgN    int // bytes of the handshake message's header read
	msgLeft int // bytes of its body still to come, once msgN is 4
}

// feed reads b and reports whether the ClientHello is whole.
func (h *helloScan) feed(b []byte) bool {
	for len(b) > 0 {
		if h.left == 0 {
			k := copy(h.hdr[h.hdrN:], b)
			h.hdrN += k
			b = b[k:]
			if h.hdrN < len(h.hdr) {
				return false
			}
			h.hdrN = 0
			h.left = int(h.hdr[3])<<8 | int(h.hdr[4])
			continue
		}
		k := min(h.left, len(b))
		if h.hdr[0] == 22 { // handshake
			body := b[:k]
			if h.msgN < len(h.msg) {
				m := copy(h.msg[h.msgN:], body)
				h.msgN += m
				body = body[m:]
				if h.msgN == len(h.msg) {
					h.msgLeft = int(h.msg[1])<<16 | int(h.msg[2])<<8 | int(h.msg[3])
				}
			}
			if h.msgN == len(h.msg) {
				h.msgLeft -= min(h.msgLeft, len(body))
				if h.msgLeft == 0 {
					return true
				}
			}
		}
		h.left -= k
		b = b[k:]
	}
	return false
}

// leaveBound gives c's place under MaxConns back, once.
func (c *clientConn) leaveBound() { c.once.Do(func() { c.l.open.Add(-1) }) }

// leaveClientBound takes c, or the connection under its TLS, out of its
// ClientListener's MaxConns, if it came from one.
func leaveClientBound(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*clientConn); ok {
		cc.leaveBound()
	}
}
