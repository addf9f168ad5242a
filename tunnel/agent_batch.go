package tunnel

import "net"

// recordBatcher is the connection under the agent's TLS: its HTTP/2
// server starts a batch before a write it will flush and flushes it
// after (h2server.Config.Batcher).
type recordBatcher struct {
	net.Conn
	batch recordBatch
}

func (b *recordBatcher) Write(p []byte) (int, error) { return b.batch.write(p, b.Conn.Write) }

// Start keeps what TLS writes from now on, until Flush.
func (b *recordBatcher) Start() { b.batch.start() }

// Flush writes what is kept in one system call, and writes through again.
func (b *recordBatcher) Flush() error { return b.batch.flush(b.Conn.Write) }

// batchedConn is the agent's TLS connection over a recordBatcher. crypto/tls
// closes a connection with a write in flight at once, without its
// close_notify alert; a batch's write is not crypto/tls's, so Close does
// the same for it: it closes the socket first, failing that write,
// rather than queue the alert behind it until the write deadline.
type batchedConn struct {
	net.Conn
	b *recordBatcher
}

func (c *batchedConn) Close() error {
	if c.b.batch.flushing.Load() {
		c.b.Conn.Close()
	}
	return c.Conn.Close()
}
