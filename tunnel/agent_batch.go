package tunnel

import (
	"net"
	"sync"
	"sync/atomic"
)

// crypto/tls writes each record it seals with a system call of its own: a
// DATA frame of 64 KiB left the agent in four writes, and each woke the
// relay's reader. The agent's HTTP/2 server gathers the records of what
// it writes before a flush and sends them in one write (BENCHMARKS.md,
// "The agent's records in one write").

// recordBatcher is the connection under the agent's TLS. Between Start
// and Flush it keeps what TLS writes; otherwise it writes through: the
// handshake, and what TLS sends on its own (alerts).
type recordBatcher struct {
	net.Conn
	mu       sync.Mutex // held across writes, so that records keep their order
	batched  bool
	buf      *[]byte
	flushing atomic.Bool // a batch's write is under way
}

// maxBatch is how much a batch holds before it is written anyway.
const maxBatch = 256 << 10

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10+1<<10); return &b }}

func (b *recordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.batched {
		return b.Conn.Write(p)
	}
	if b.buf == nil {
		b.buf = batchBufs.Get().(*[]byte)
	}
	*b.buf = append(*b.buf, p...)
	if len(*b.buf) >= maxBatch {
		if err := b.writeLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Start keeps what TLS writes from now on, until Flush.
func (b *recordBatcher) Start() {
	b.mu.Lock()
	b.batched = true
	b.mu.Unlock()
}

// Flush writes what is kept in one system call, and writes through again.
func (b *recordBatcher) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batched = false
	return b.writeLocked()
}

func (b *recordBatcher) writeLocked() error {
	if b.buf == nil {
		return nil
	}
	b.flushing.Store(true)
	_, err := b.Conn.Write(*b.buf)
	b.flushing.Store(false)
	*b.buf = (*b.buf)[:0]
	batchBufs.Put(b.buf)
	b.buf = nil
	return err
}

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
	if c.b.flushing.Load() {
		c.b.Conn.Close()
	}
	return c.Conn.Close()
}
