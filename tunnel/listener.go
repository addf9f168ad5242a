package tunnel

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// ClientListener wraps the listener a relay serves its clients on, for two
// things only the socket can do.
//
// It fixes each accepted TCP connection's kernel send buffer at sendBuffer
// bytes (at most net.core.wmem_max; Linux reserves twice that for its
// own bookkeeping); sendBuffer <= 0
// leaves the kernel's autotuning, under which one client that stops
// reading can hold megabytes of kernel memory (up to net.ipv4.tcp_wmem's
// maximum), and a thousand such clients push the whole machine into TCP
// memory pressure, slowing every connection on it. A fixed buffer also caps
// one connection's throughput at about sendBuffer per round trip.
//
// It bounds how long the kernel keeps bytes a client does not take:
// data unacknowledged for writeTimeout (0: DefaultWriteTimeout) ends the
// connection (TCP_USER_TIMEOUT, which counts a zero receive window too;
// Linux only).
// That covers what the relay's own write timeout cannot see: a response
// small enough to fit the send buffer, finished as far as the relay knows,
// that the client never reads while the connection idles and closes.
//
// And a connection closed after a write to it timed out (the relay's
// WriteTimeout, or an HTTP/2 server's WriteByteTimeout) is reset rather
// than closed gracefully, so the kernel drops the bytes its client never
// read at once.
func ClientListener(ln net.Listener, sendBuffer int, writeTimeout time.Duration) net.Listener {
	return &clientListener{Listener: ln, sendBuffer: sendBuffer, userTimeout: int(orDefault(writeTimeout, DefaultWriteTimeout).Milliseconds())}
}

type clientListener struct {
	net.Listener
	sendBuffer  int
	userTimeout int // milliseconds
}

func (l *clientListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	if l.sendBuffer > 0 {
		tc.SetWriteBuffer(l.sendBuffer)
	}
	setUserTimeout(tc, l.userTimeout)
	return &clientConn{TCPConn: tc}, nil
}

// clientConn remembers whether a write timed out, to reset on Close.
type clientConn struct {
	*net.TCPConn
	timedOut atomic.Bool
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
	return c.TCPConn.Close()
}
