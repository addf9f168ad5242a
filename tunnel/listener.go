package tunnel

import (
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
}

// ClientListener wraps the listener a relay serves its clients on, for
// what only the socket can do: the limits of ClientListenerConfig, and a
// connection closed after a write to it timed out (the relay's
// WriteTimeout, or an HTTP/2 server's WriteByteTimeout) is reset rather
// than closed gracefully, so the kernel drops the bytes its client never
// read at once.
func ClientListener(ln net.Listener, c ClientListenerConfig) net.Listener {
	return &clientListener{Listener: ln, cfg: c,
		userTimeout: int(orDefault(c.WriteTimeout, DefaultWriteTimeout).Milliseconds())}
}

type clientListener struct {
	net.Listener
	cfg         ClientListenerConfig
	userTimeout int // milliseconds
	open        atomic.Int64
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
		return &clientConn{TCPConn: tc, l: l}, nil
	}
}

// clientConn counts itself open until closed, and remembers whether a
// write timed out, to reset on Close.
type clientConn struct {
	*net.TCPConn
	l        *clientListener
	timedOut atomic.Bool
	once     sync.Once
}

func (c *clientConn) Write(p []byte) (int, error) {
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
	return err
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
