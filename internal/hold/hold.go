package hold

import (
	"net"
	"sync"
	"time"
)

// x/net's HTTP/2 server flushes the HEADERS of every answer on their own:
// the handler waits until they are written, and the server flushes
// whenever it has nothing else queued. A small answer's DATA follows a few
// microseconds later in a second write, and the relay wakes up twice. Its
// client does the same with a request's HEADERS and body, and net/http's
// server with the answers the relay sends its own clients. Conn sits
// under each (ConfigureServer for the last) and holds back a write that
// ends with a header block of a stream that goes on, for at most For,
// so that the DATA usually leaves in the same write; a stream whose body
// comes later (a watch, an upgraded stream, a slow upload) gets its
// headers after For.
// BENCHMARKS.md, "Holding a small answer's HEADERS".
const (
	// For is the longest a header block is held.
	For = 100 * time.Microsecond
	// maxHeld bounds what is held: beyond it, held bytes go at once.
	maxHeld = 16 << 10
	// keepHeld is the largest buffer a connection keeps between holds;
	// one that grew past it (headers sent with a large DATA) goes, so
	// that thousands of idle connections do not each keep one.
	keepHeld = 1 << 10
)

// HTTP/2 frame types and flags read by frameScanner (RFC 9113 §6),
// written out here so that this package needs nothing of x/net/http2.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameContinuation = 0x9
	flagEndStream     = 0x1
	flagEndHeaders    = 0x4
	frameHeaderLen    = 9
)

// Conn is a connection as an HTTP/2 client (the relay's, on a tunnel
// connection) or server (the relay's, for its clients) writes to it. Reads and read deadlines go to the connection; a
// write the timer sends has its own write timeout.
type Conn struct {
	net.Conn
	writeTimeout time.Duration
	hold         time.Duration // For; longer in tests

	mu       sync.Mutex
	held     []byte
	timer    *time.Timer
	err      error     // a held write the timer sent failed; every later write fails
	deadline time.Time // the write deadline HTTP/2 last set
	frames   frameScanner
}

// NewConn wraps c; preface is how many bytes c's writer sends before
// its first frame (an HTTP/2 client's connection preface, none for a
// server).
func NewConn(c net.Conn, writeTimeout time.Duration, preface int) *Conn {
	h := &Conn{Conn: c, writeTimeout: writeTimeout, hold: For, frames: frameScanner{skip: preface}}
	h.timer = time.AfterFunc(time.Hour, h.release)
	h.timer.Stop()
	return h
}

// SetHold sets how long a header block is held, For unless set; tests
// hold longer. Call it before the first write.
func (h *Conn) SetHold(d time.Duration) { h.hold = d }

// Write writes p, with anything held before it; it holds p instead if p
// ends with the header block of a stream that goes on.
func (h *Conn) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return 0, h.err
	}
	open := h.frames.scan(p)
	if open && len(h.held)+len(p) <= maxHeld {
		if len(h.held) == 0 {
			h.timer.Reset(h.hold) // from the first held write: a hold never grows longer
		}
		h.held = append(h.held, p...)
		return len(p), nil
	}
	var n, held int
	var err error
	if len(h.held) == 0 {
		n, err = h.Conn.Write(p)
	} else {
		h.timer.Stop()
		held = len(h.held)
		h.held = append(h.held, p...)
		n, err = h.Conn.Write(h.held)
		h.emptyHeld()
	}
	if err != nil {
		// HTTP/2 may write the rest of p again after a write deadline
		// that passed with progress; the scanner has read all of p and
		// no longer knows where frames start: hold nothing from now on.
		h.frames.lost = true
	}
	return max(n-held, 0), err
}

// emptyHeld empties the held buffer, keeping it only if it is small.
func (h *Conn) emptyHeld() {
	if cap(h.held) > keepHeld {
		h.held = nil
		return
	}
	h.held = h.held[:0]
}

// Close stops the hold's timer and closes the connection; anything held
// is dropped with it.
func (h *Conn) Close() error {
	h.timer.Stop()
	return h.Conn.Close()
}

// SetWriteDeadline sets the deadline of HTTP/2's writes. It waits for a
// held write the timer is sending, whose deadline is its own.
func (h *Conn) SetWriteDeadline(t time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.deadline = t
	return h.Conn.SetWriteDeadline(t)
}

// release sends what is held when nothing followed it within For.
func (h *Conn) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.held) == 0 || h.err != nil {
		return
	}
	h.Conn.SetWriteDeadline(time.Now().Add(h.writeTimeout))
	_, err := h.Conn.Write(h.held)
	h.Conn.SetWriteDeadline(h.deadline)
	h.emptyHeld()
	if err != nil {
		// HTTP/2 learns of it from its next write, or from the
		// connection's close.
		h.err = err
		h.Conn.Close()
	}
}

// frameScanner follows the HTTP/2 frames in the bytes written, across
// writes.
type frameScanner struct {
	skip    int // bytes before the first frame still to come (a client's preface)
	header  [frameHeaderLen]byte
	have    int  // bytes of the current frame header seen
	left    int  // payload bytes of the current frame still to come
	goesOn  bool // the current header block's stream has no END_STREAM
	openEnd bool // the last whole frame ended a header block of a stream that goes on
	lost    bool // a write failed part-way: frame boundaries are unknown
}

// scan reads p and reports whether it ends exactly after a frame that
// completes the header block of a stream that goes on.
func (s *frameScanner) scan(p []byte) bool {
	if s.lost {
		return false
	}
	if n := min(s.skip, len(p)); n > 0 {
		s.skip -= n
		p = p[n:]
	}
	for len(p) > 0 {
		if s.left > 0 {
			n := min(s.left, len(p))
			s.left -= n
			p = p[n:]
			continue
		}
		n := copy(s.header[s.have:], p)
		s.have += n
		p = p[n:]
		if s.have < frameHeaderLen {
			break
		}
		s.have = 0
		s.left = int(s.header[0])<<16 | int(s.header[1])<<8 | int(s.header[2])
		typ, flags := s.header[3], s.header[4]
		switch typ {
		case frameHeaders:
			s.goesOn = flags&flagEndStream == 0
			s.openEnd = s.goesOn && flags&flagEndHeaders != 0
		case frameContinuation:
			s.openEnd = s.goesOn && flags&flagEndHeaders != 0
		default:
			s.openEnd = false
		}
	}
	return s.openEnd && s.skip == 0 && s.left == 0 && s.have == 0
}
