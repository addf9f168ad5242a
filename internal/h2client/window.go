//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its Framer and hpack are what the relay's client is written on, and on Go 1.26 it is not a wrapper of net/http. This package is the relay side of the tunnel written on it (tunnel/internal/h2server the agent side); in package tunnel only relay_clients_h2.go names it. See PROTOCOL.md.

package h2client

import (
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/clusterconnect/clusterconnect/internal/h2frame"
)

// A response's receive window on the relay: the budget grown windows
// share, the rule that grows one, and the buffer that holds what the
// agent sent ahead of the client.

// windowBudget is what all streams' windows may hold beyond their initial
// window, together.
type windowBudget struct {
	total int64
	avail atomic.Int64
}

// inUse is how much of the budget streams hold.
func (b *windowBudget) inUse() int64 { return b.total - b.avail.Load() }

// take takes up to want bytes, leaving at least keep, and returns how
// many it took.
func (b *windowBudget) take(want, keep int64) int64 {
	for {
		a := b.avail.Load()
		n := min(a-keep, want)
		if n <= 0 {
			return 0
		}
		if b.avail.CompareAndSwap(a, a-n) {
			return n
		}
	}
}

// give returns n bytes to the budget.
func (b *windowBudget) give(n int64) {
	if n > 0 {
		b.avail.Add(n)
	}
}

// returnWindow gives the agent back what the reader took, once it is a
// quarter of the stream's window, and grows the window while the reader
// keeps up, as QUIC implementations tune theirs: if the reader took half
// a window or more in less than two round trips to the agent (4 × the
// fraction of the window × RTT), the window is what would hold the stream
// back, and it doubles, up to the limit and as the budget allows: up to
// the share out of whatever the budget has left, past it only out of the
// budget's first half, so that streams with large windows leave the
// other half to streams growing to their share. A reader that stops, or
// reads slower than the agent's window allows, never grows it.
func (s *h2Stream) returnWindow(n int) {
	cc := s.cc
	cfg := cc.cfg
	s.mu.Lock()
	if s.recvEnd || s.released {
		s.mu.Unlock()
		return
	}
	s.read += int64(n)
	held := s.avail + int32(s.buf.len)
	want := s.target - held
	if want < s.target/4 {
		s.mu.Unlock()
		return
	}
	if inEpoch := s.read - s.epochRead; s.target < cfg.windowLimit && inEpoch > int64(s.target/2) {
		now := time.Now()
		if h2frame.WindowHoldsBack(inEpoch, int64(s.target), now.Sub(s.epochStart), cc.rtt(now)) {
			step, keep := h2frame.GrowthStep(int64(s.target), int64(cfg.windowLimit), int64(cfg.windowShare), cfg.budget.total)
			got := int32(cfg.budget.take(step, keep))
			s.target += got
			s.charged += int64(got)
			want += got
		}
		s.epochStart, s.epochRead = now, s.read
	}
	s.avail += want
	s.mu.Unlock()
	cc.writeFrame(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(s.id, uint32(want)) })
}

// chunks is a stream's unread data, in pooled pieces.
type chunks struct {
	parts [][]byte // parts[0][off:] is unread
	off   int
	len   int
}

// chunkSizes are the pieces a stream's data is kept in: small enough that
// a stream's pieces hold at most twice its bytes and one piece (a frame's
// whole pieces are read into pieces of their own, after a piece its
// predecessor's tail may have left part-empty; TestStreamBufferRoom),
// and almost no more than its bytes when frames are of DataFrameSize; large enough
// to copy in few pieces.
var chunkSizes = [...]int{1 << 10, 4 << 10, 16 << 10}

var chunkPools [len(chunkSizes)]sync.Pool

func getChunk(n int) []byte {
	for i, size := range chunkSizes {
		if n <= size || i == len(chunkSizes)-1 {
			if p, ok := chunkPools[i].Get().(*[]byte); ok {
				return (*p)[:0]
			}
			return make([]byte, 0, size)
		}
	}
	panic("unreachable")
}

func putChunk(b []byte) {
	for i, size := range chunkSizes {
		if cap(b) == size {
			b = b[:0]
			chunkPools[i].Put(&b)
			return
		}
	}
}

func (c *chunks) write(p []byte) {
	c.len += len(p)
	for len(p) > 0 {
		if n := len(c.parts); n > 0 {
			last := c.parts[n-1]
			if room := cap(last) - len(last); room > 0 {
				k := min(room, len(p))
				c.parts[n-1] = append(last, p[:k]...)
				p = p[k:]
				continue
			}
		}
		c.parts = append(c.parts, getChunk(len(p)))
	}
}

// add appends whole chunks, which become c's.
func (c *chunks) add(pieces [][]byte) {
	for _, p := range pieces {
		c.parts = append(c.parts, p)
		c.len += len(p)
	}
}

func (c *chunks) read(p []byte) int {
	n := 0
	for n < len(p) && len(c.parts) > 0 {
		k := copy(p[n:], c.parts[0][c.off:])
		n += k
		c.off += k
		if c.off == len(c.parts[0]) {
			putChunk(c.parts[0])
			c.parts[0] = nil
			c.parts = c.parts[1:]
			c.off = 0
		}
	}
	c.len -= n
	if len(c.parts) == 0 {
		c.parts = nil
	}
	return n
}

func (c *chunks) free() {
	for _, p := range c.parts {
		putChunk(p)
	}
	*c = chunks{}
}
