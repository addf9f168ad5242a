package tunnel

import (
	"io"
	"net"
)

// bufferedConn is a connection whose first bytes were already read into a
// buffer (by a handshake's bufio.Reader): it reads through r, which drains
// that buffer before the conn itself. Both sides use it.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
