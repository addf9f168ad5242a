package tunnel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// A raw stream is one HTTP/2 CONNECT stream carrying bytes both ways: the
// request body from relay to agent, the response body from agent to relay.
//
// HTTP/2 lets the relay (the client) half-close by ending its request body,
// but gives the agent (the server) no way to end its response while it keeps
// reading: net/http ends a stream when the handler returns. So the
// agent-to-relay direction is framed: each chunk is a 4-byte big-endian
// length and that many bytes; a zero length is the agent's half-close.
const maxFrame = 1 << 20

// streamAddr is the address of either end of a raw stream.
type streamAddr string

func (a streamAddr) Network() string { return "clusterconnect-tunnel" }
func (a streamAddr) String() string  { return string(a) }

// deadline is a settable deadline with a channel that is closed when it
// passes, like the one inside net.Pipe.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
}

func newDeadline() deadline { return deadline{cancel: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait until it has closed cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if wait := time.Until(t); wait > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		c := d.cancel
		d.timer = time.AfterFunc(wait, func() { close(c) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// deadlineReader gives a reader that cannot be interrupted (an HTTP/2 body)
// net.Conn read deadlines: one goroutine reads ahead a chunk at a time, and
// Read waits for that chunk, the deadline, or Close. A passed deadline fails
// the pending Read with os.ErrDeadlineExceeded and leaves the stream usable,
// as net/http's server expects when it interrupts a background read.
type deadlineReader struct {
	src      io.Reader
	start    sync.Once
	chunks   chan chunk
	pending  []byte
	err      error
	deadline deadline
	closed   chan struct{}
}

type chunk struct {
	b   []byte
	err error
}

func newDeadlineReader(src io.Reader) *deadlineReader {
	return &deadlineReader{src: src, chunks: make(chan chunk), deadline: newDeadline(), closed: make(chan struct{})}
}

func (r *deadlineReader) pump() {
	for {
		buf := make([]byte, 32<<10)
		n, err := r.src.Read(buf)
		select {
		case r.chunks <- chunk{buf[:n], err}:
		case <-r.closed:
			return
		}
		if err != nil {
			return
		}
	}
}

func (r *deadlineReader) Read(p []byte) (int, error) {
	if len(r.pending) == 0 && r.err == nil {
		r.start.Do(func() { go r.pump() })
		select {
		case c := <-r.chunks:
			r.pending, r.err = c.b, c.err
		case <-r.deadline.wait():
			return 0, os.ErrDeadlineExceeded
		case <-r.closed:
			return 0, net.ErrClosed
		}
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	if len(r.pending) == 0 && r.err != nil {
		return n, r.err
	}
	return n, nil
}

func (r *deadlineReader) close() {
	select {
	case <-r.closed:
	default:
		close(r.closed)
	}
}

// frameReader decodes the agent-to-relay framing.
type frameReader struct {
	r    *bufio.Reader
	left int // bytes left in the current frame
	eof  bool
}

func (f *frameReader) Read(p []byte) (int, error) {
	if f.eof {
		return 0, io.EOF
	}
	if f.left == 0 {
		var hdr [4]byte
		if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				// The agent's handler ended the stream without a
				// half-close frame: that is a full close.
				f.eof = true
			}
			return 0, err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 {
			f.eof = true
			return 0, io.EOF
		}
		if n > maxFrame {
			return 0, errors.New("tunnel: raw stream frame too large")
		}
		f.left = int(n)
	}
	n, err := f.r.Read(p[:min(len(p), f.left)])
	f.left -= n
	if errors.Is(err, io.EOF) {
		if f.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil // the frame is complete; the next Read looks for more
	}
	return n, err
}

// rawConn is what both ends of a raw stream share: deadline-aware reads,
// write deadlines checked before each write, and one close.
type rawConn struct {
	in            *deadlineReader
	writeDeadline deadline
	local, remote net.Addr
	closeOnce     sync.Once
	stats         *counters
	inBytes       *atomic.Uint64
}

func (c *rawConn) Read(p []byte) (int, error) {
	n, err := c.in.Read(p)
	c.inBytes.Add(uint64(n))
	return n, err
}

func (c *rawConn) writable() error {
	if isClosed(c.writeDeadline.wait()) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (c *rawConn) LocalAddr() net.Addr  { return c.local }
func (c *rawConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines. A read deadline interrupts a pending
// Read; a write deadline fails writes that start after it, but does not
// interrupt one already blocked on flow control.
func (c *rawConn) SetDeadline(t time.Time) error {
	c.in.deadline.set(t)
	c.writeDeadline.set(t)
	return nil
}

func (c *rawConn) SetReadDeadline(t time.Time) error  { c.in.deadline.set(t); return nil }
func (c *rawConn) SetWriteDeadline(t time.Time) error { c.writeDeadline.set(t); return nil }
