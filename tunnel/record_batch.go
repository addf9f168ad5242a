package tunnel

import (
	"sync"
	"sync/atomic"
)

// crypto/tls writes each record it seals with a system call of its own: a
// DATA frame of 64 KiB left the agent in four writes, and each woke the
// relay's reader; a 16 KiB DATA frame that the relay's HTTP/2 server
// sends a client, 9 bytes over a record with its frame header, left in
// two, and so did each 32 KiB of an answer the relay copies to an
// HTTP/1.1 client. Under the agent's TLS and under the relay's clients'
// TLS a recordBatch gathers the records of one such write and sends them
// in one (BENCHMARKS.md, "The agent's records in one write", "The
// relay's records to HTTP/2 clients").

// recordBatch is what sits under a TLS connection: between start and
// flush it keeps what TLS writes; otherwise it writes through (the
// handshake, and what TLS sends on its own, such as alerts). A batch
// whose write failed fails every write after it: the bytes on the wire
// may end inside a record, and nothing sent after that could be read.
//
// A batch whose write is stalled holds its buffer until the write
// deadline, and a relay may hold a thousand stalled clients: their batches
// take buffers just larger than the relay's 32 KiB copy (smallBatch), the
// agent's a size for its 64 KiB frames.
type recordBatch struct {
	mu       sync.Mutex // held across writes, so that records keep their order
	on       bool
	small    bool // buffers from smallBatches
	buf      *[]byte
	err      error
	flushing atomic.Bool // a batch's write is under way
}

// maxBatch is how much a batch holds before it is written anyway.
const maxBatch = 256 << 10

// Batch buffers: room for a 64 KiB frame's records and for a 32 KiB
// copy's. A buffer that grew past its class is left to the collector.
const (
	largeBatch = 64<<10 + 1<<10
	smallBatch = 32<<10 + 512
)

var (
	largeBatches = sync.Pool{New: func() any { b := make([]byte, 0, largeBatch); return &b }}
	smallBatches = sync.Pool{New: func() any { b := make([]byte, 0, smallBatch); return &b }}
)

func (b *recordBatch) pool() (*sync.Pool, int) {
	if b.small {
		return &smallBatches, smallBatch
	}
	return &largeBatches, largeBatch
}

// write keeps p while a batch is on, or writes it through.
func (b *recordBatch) write(p []byte, through func([]byte) (int, error)) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.on {
		return through(p)
	}
	if b.buf == nil {
		pool, _ := b.pool()
		b.buf = pool.Get().(*[]byte)
	}
	*b.buf = append(*b.buf, p...)
	if len(*b.buf) >= maxBatch {
		if err := b.writeLocked(through); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// start keeps what TLS writes from now on, until flush.
func (b *recordBatch) start() {
	b.mu.Lock()
	b.on = true
	b.mu.Unlock()
}

// flush writes what is kept in one system call, and writes through again.
func (b *recordBatch) flush(through func([]byte) (int, error)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on = false
	if b.err != nil {
		return b.err
	}
	return b.writeLocked(through)
}

func (b *recordBatch) writeLocked(through func([]byte) (int, error)) error {
	if b.buf == nil {
		return nil
	}
	b.flushing.Store(true)
	_, err := through(*b.buf)
	b.flushing.Store(false)
	if pool, size := b.pool(); cap(*b.buf) == size {
		*b.buf = (*b.buf)[:0]
		pool.Put(b.buf)
	}
	b.buf = nil
	b.err = err
	return err
}
