//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its Framer and hpack are what the agent's server is written on, and on Go 1.26 it is not a wrapper of net/http. See tunnel/PROTOCOL.md.

package h2server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/clusterconnect/clusterconnect/internal/h2frame"
)

// Config is a connection's limits. Zero fields take the defaults given.
type Config struct {
	// MaxConcurrentStreams the client may open at once; past it a new
	// stream is refused (REFUSED_STREAM, which a client retries). Default
	// 250.
	MaxConcurrentStreams uint32
	// MaxUploadBufferPerStream is one request body's receive window, and
	// MaxUploadBufferPerConnection all of them together. Defaults 1 MiB
	// and 16 MiB.
	MaxUploadBufferPerStream     int32
	MaxUploadBufferPerConnection int32
	// MaxUploadWindowPerStream is how far a request body's window may
	// grow, doubling while its handler reads as fast as the window lets
	// the bytes come; the windows of a connection's streams grow by at
	// most half its MaxUploadBufferPerConnection together, and past an
	// eighth of that only while half of it is left. Default 4 MiB; at
	// most MaxUploadBufferPerStream (or negative): windows never grow.
	MaxUploadWindowPerStream int32
	// MaxHeaderBytes bounds a request's header list, as HTTP/2 counts it
	// (SETTINGS_MAX_HEADER_LIST_SIZE); a longer one is answered 431.
	// Default 1 MiB.
	MaxHeaderBytes int
	// PingInterval: with nothing read for this long the server pings,
	// and closes the connection if nothing is read for PingTimeout more.
	// Zero: no pings.
	PingInterval, PingTimeout time.Duration
	// WriteTimeout bounds each write to the connection; one that does not
	// finish in time closes it. Zero: none.
	WriteTimeout time.Duration
	// Batcher, if set, gathers what the server writes before a flush:
	// see Batcher.
	Batcher Batcher

	fixedRTT time.Duration // tests: the round trip windows grow by
}

// Batcher gathers a connection's writes. The server calls Start before it
// writes what it then flushes, and Flush once its own buffer is flushed;
// between the two the connection may keep what is written (a TLS
// connection's records, each of which crypto/tls writes on its own), and
// Flush sends it. Writes outside a Start and its Flush are not held.
type Batcher interface {
	Start()
	Flush() error
}

// maxFrameRead is the largest frame the server takes (its
// SETTINGS_MAX_FRAME_SIZE), as x/net's server: clients send bodies in
// frames that fill TLS records.
const maxFrameRead = 1 << 20

// writeBuffer is the connection's write buffer, where small frames
// (headers, window updates, small answers) gather for one write. A TLS
// record's worth: an answer's headers and the start of its first large
// DATA frame fill one record, and the rest of the frame, written past the
// buffer, whole records.
const writeBuffer = 16 << 10

// Conn is one connection served.
type Conn struct {
	conn net.Conn
	cfg  Config
	h    http.Handler

	br *bufio.Reader

	// Written by handlers and the reader, under wmu.
	wmu  sync.Mutex
	bw   *bufio.Writer
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf headerBuf
	werr error // the first failed write: the connection is over

	mu         sync.Mutex
	cond       *sync.Cond // a window grew, a stream ended, the connection closed
	streams    map[uint32]*stream
	maxID      uint32 // the highest stream ID the client opened
	handlers   int    // handlers running, of open streams and reset ones
	sendWin    int64  // the connection's send window
	initWin    int64  // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame  int    // the client's SETTINGS_MAX_FRAME_SIZE
	recvWin    int64  // what the client may still send on the connection
	recvUnsent int64  // connection window taken by data read, not yet returned
	growBudget int64  // what streams' windows may grow by, together
	growShare  int64  // how far one grows out of whatever is left of it
	growAvail  int64  // what is left of it
	started    bool   // the server's settings went
	goingAway  bool
	closed     bool

	lastRead atomic.Int64 // unix nanoseconds
	pingSent atomic.Bool

	// The connection's round-trip time, which request bodies' windows grow
	// by: sampled from the SETTINGS exchange, then by a PING when older
	// than h2frame.RoundTripMaxAge (rttPingAt: unix nanoseconds).
	settingsSent  time.Time // read loop's
	settingsAcked bool      // read loop's
	roundTrip     h2frame.RoundTrip
	rttPingAt     atomic.Int64 // 0: no round-trip PING unanswered

	ctx       context.Context
	cancelAll context.CancelFunc
	closeOnce sync.Once
	done      chan struct{}
}

// New returns a connection that serves h on conn once Serve is called.
func New(conn net.Conn, cfg *Config, h http.Handler) *Conn {
	c := &Conn{conn: conn, h: h, streams: map[uint32]*stream{}, sendWin: 65535, initWin: 65535, peerFrame: 16384, done: make(chan struct{})}
	if cfg != nil {
		c.cfg = *cfg
	}
	if c.cfg.MaxConcurrentStreams == 0 {
		c.cfg.MaxConcurrentStreams = 250
	}
	if c.cfg.MaxUploadBufferPerStream <= 0 {
		c.cfg.MaxUploadBufferPerStream = 1 << 20
	}
	if c.cfg.MaxUploadBufferPerConnection <= 0 {
		c.cfg.MaxUploadBufferPerConnection = 16 << 20
	}
	c.cfg.MaxUploadBufferPerConnection = max(c.cfg.MaxUploadBufferPerConnection, 65535)
	c.recvWin = int64(c.cfg.MaxUploadBufferPerConnection)
	if c.cfg.MaxUploadWindowPerStream == 0 {
		c.cfg.MaxUploadWindowPerStream = 4 << 20
	}
	c.cfg.MaxUploadWindowPerStream = max(c.cfg.MaxUploadWindowPerStream, c.cfg.MaxUploadBufferPerStream)
	c.growBudget = int64(c.cfg.MaxUploadBufferPerConnection) / 2
	c.growShare = max(c.growBudget/8, int64(c.cfg.MaxUploadBufferPerStream))
	c.growAvail = c.growBudget
	if c.cfg.MaxHeaderBytes <= 0 {
		c.cfg.MaxHeaderBytes = 1 << 20
	}
	c.cond = sync.NewCond(&c.mu)
	c.br = bufio.NewReaderSize(readTracker{c}, 16<<10)
	c.bw = bufio.NewWriterSize(writeDeadliner{c}, writeBuffer)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = uint32(c.cfg.MaxHeaderBytes)
	c.fr.SetMaxReadFrameSize(maxFrameRead)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.ctx, c.cancelAll = context.WithCancel(context.WithValue(context.Background(), http.LocalAddrContextKey, conn.LocalAddr()))
	return c
}

// Done is closed when the connection is over.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Serve reads the connection's frames until it ends, starting a handler
// for each request; it returns once the connection is closed. Handlers
// still running then find their writes failing.
func (c *Conn) Serve() {
	defer c.close()
	preface := make([]byte, len(http2.ClientPreface))
	c.lastRead.Store(time.Now().UnixNano())
	if c.cfg.WriteTimeout > 0 {
		// The preface is the first thing a client sends; one that sends
		// nothing is not a client.
		c.conn.SetReadDeadline(time.Now().Add(c.cfg.WriteTimeout))
	}
	if _, err := io.ReadFull(c.br, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	c.conn.SetReadDeadline(time.Time{})
	c.settingsSent = time.Now()
	if err := c.write(func() error {
		err := c.fr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.MaxConcurrentStreams},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.MaxUploadBufferPerStream)},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameRead},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(c.cfg.MaxHeaderBytes)})
		if err == nil && c.cfg.MaxUploadBufferPerConnection > 65535 {
			err = c.fr.WriteWindowUpdate(0, uint32(c.cfg.MaxUploadBufferPerConnection-65535))
		}
		return err
	}, true); err != nil {
		return
	}
	c.mu.Lock()
	c.started = true
	away := c.goingAway
	c.mu.Unlock()
	if away {
		// Shutdown came before the settings went: GOAWAY now.
		c.write(func() error { return c.fr.WriteGoAway(0, http2.ErrCodeNo, nil) }, true)
		c.mu.Lock()
		idle := len(c.streams) == 0
		c.mu.Unlock()
		if idle {
			return
		}
	}
	if c.cfg.PingInterval > 0 {
		go c.ping()
	}
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// A frame that ends only its stream (a bad header
				// block, a field of the wrong kind). A stream it
				// opened counts as opened.
				c.mu.Lock()
				if se.StreamID%2 == 1 && se.StreamID > c.maxID {
					c.maxID = se.StreamID
				}
				c.mu.Unlock()
				c.resetStream(se.StreamID, se.Code)
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAwayNow(http2.ErrCode(ce))
			}
			return
		}
		if err := c.handle(f); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAwayNow(http2.ErrCode(ce))
			}
			return
		}
	}
}

// readTracker notes when the connection last read anything.
type readTracker struct{ c *Conn }

func (r readTracker) Read(p []byte) (int, error) {
	n, err := r.c.conn.Read(p)
	if n > 0 {
		r.c.lastRead.Store(time.Now().UnixNano())
		r.c.pingSent.Store(false)
	}
	return n, err
}

// writeDeadliner writes to the connection within WriteTimeout.
type writeDeadliner struct{ c *Conn }

func (w writeDeadliner) Write(p []byte) (int, error) {
	if t := w.c.cfg.WriteTimeout; t > 0 {
		w.c.conn.SetWriteDeadline(time.Now().Add(t))
	}
	return w.c.conn.Write(p)
}

// write runs f with the connection's writer, and flushes if flush is set.
// A failed write ends the connection.
func (c *Conn) write(f func() error, flush bool) error {
	c.wmu.Lock()
	if c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		return err
	}
	batch := c.cfg.Batcher
	if !flush {
		batch = nil
	}
	if batch != nil {
		batch.Start()
	}
	err := f()
	if err == nil && flush {
		err = c.bw.Flush()
	}
	if batch != nil {
		if t := c.cfg.WriteTimeout; t > 0 {
			c.conn.SetWriteDeadline(time.Now().Add(t))
		}
		if ferr := batch.Flush(); err == nil {
			err = ferr
		}
	}
	if err != nil {
		c.werr = err
	}
	c.wmu.Unlock()
	if err != nil {
		c.close()
	}
	return err
}

// flush writes what the connection's buffer holds.
func (c *Conn) flush() error { return c.write(func() error { return nil }, true) }

// close ends the connection: streams fail, handlers' writes fail, and
// Done is closed.
func (c *Conn) close() {
	c.closeOnce.Do(func() {
		c.conn.Close()
		c.mu.Lock()
		c.closed = true
		for _, s := range c.streams {
			s.fail(errConnClosed)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		c.cancelAll()
		close(c.done)
	})
}

var (
	errConnClosed   = errors.New("h2server: connection closed")
	errStreamClosed = errors.New("h2server: stream reset by the client")
)

// handle acts on one frame.
func (c *Conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.settings(f)
	case *http2.MetaHeadersFrame:
		return c.headers(f)
	case *http2.DataFrame:
		return c.data(f)
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() && f.Data == rttPing {
			if at := c.rttPingAt.Swap(0); at != 0 {
				c.roundTrip.Sample(time.Since(time.Unix(0, at)))
			}
		}
		if f.IsAck() || f.StreamID != 0 {
			return nil
		}
		return c.write(func() error { return c.fr.WritePing(true, f.Data) }, true)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		if s := c.streams[f.StreamID]; s != nil {
			s.fail(errStreamClosed)
			c.removeLocked(s)
		}
		c.mu.Unlock()
		return nil
	case *http2.GoAwayFrame:
		// The client opens no more streams: finish those open, then go.
		c.Shutdown()
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // PRIORITY and unknown frames
}

func (c *Conn) settings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		if !c.settingsAcked {
			c.settingsAcked = true
			c.roundTrip.Sample(time.Since(c.settingsSent))
		}
		return nil
	}
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			d := int64(s.Val) - c.initWin
			c.initWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += d
			}
		case http2.SettingMaxFrameSize:
			c.peerFrame = int(s.Val)
		}
		return nil
	})
	c.cond.Broadcast()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.write(func() error { return c.fr.WriteSettingsAck() }, true)
}

func (c *Conn) windowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if c.sendWin+int64(f.Increment) > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendWin += int64(f.Increment)
	} else if s := c.streams[f.StreamID]; s != nil {
		s.sendWin += int64(f.Increment)
	}
	c.cond.Broadcast()
	return nil
}

// data puts a DATA frame's payload into its stream's body.
func (c *Conn) data(f *http2.DataFrame) error {
	n := int64(f.Length) // padding counts against the windows too
	c.mu.Lock()
	if f.StreamID > c.maxID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if n > c.recvWin {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWin -= n
	s := c.streams[f.StreamID]
	if s == nil || s.recvDone {
		// A stream the server reset, or answered and ended: its bytes
		// are the connection's window again.
		c.recvUnsent += n
		update := c.takeConnUpdateLocked()
		c.mu.Unlock()
		if update > 0 {
			c.write(func() error { return c.fr.WriteWindowUpdate(0, uint32(update)) }, true)
		}
		return nil
	}
	if n > s.recvWin {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	s.recvWin -= n
	if f.StreamEnded() {
		s.recvDone = true
	}
	giveBack := n - int64(len(f.Data())) // padding, at once
	if s.body.put(f.Data(), f.StreamEnded()) {
		giveBack = n // nobody reads it
	}
	c.mu.Unlock()
	if giveBack > 0 {
		s.returnWindow(int(giveBack), false)
	}
	return nil
}

func (c *Conn) maxIDLoad() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxID
}

// takeConnUpdateLocked returns the connection window to give back now, if
// enough has gathered.
func (c *Conn) takeConnUpdateLocked() int64 {
	if c.recvUnsent < int64(c.cfg.MaxUploadBufferPerConnection)/4 && c.recvUnsent < 1<<20 {
		return 0
	}
	n := c.recvUnsent
	c.recvUnsent = 0
	c.recvWin += n
	return n
}

// removeLocked forgets s, and closes the connection if it is going away
// and s was its last stream.
func (c *Conn) removeLocked(s *stream) {
	if c.streams[s.id] != s {
		return
	}
	delete(c.streams, s.id)
	c.growAvail += s.target - int64(c.cfg.MaxUploadBufferPerStream)
	c.cond.Broadcast()
	if c.goingAway && len(c.streams) == 0 {
		go c.close()
	}
}

// resetStream sends RST_STREAM for id and forgets the stream.
func (c *Conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		s.fail(errStreamClosed)
		c.removeLocked(s)
	}
	c.mu.Unlock()
	c.write(func() error { return c.fr.WriteRSTStream(id, code) }, true)
}

// Shutdown sends GOAWAY: the client opens no new streams, those open
// finish, and then the connection closes. It returns at once.
func (c *Conn) Shutdown() {
	c.mu.Lock()
	if c.goingAway || c.closed {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	last := c.maxID
	idle := len(c.streams) == 0
	started := c.started
	c.mu.Unlock()
	if started {
		c.write(func() error { return c.fr.WriteGoAway(last, http2.ErrCodeNo, nil) }, true)
	}
	if idle {
		c.close()
	}
}

// goAwayNow ends the connection for a protocol error.
func (c *Conn) goAwayNow(code http2.ErrCode) {
	last := c.maxIDLoad()
	c.write(func() error { return c.fr.WriteGoAway(last, code, nil) }, true)
}

// ping pings after PingInterval with nothing read, and closes the
// connection when PingTimeout more passes with nothing read. A relay
// counts on an idle agent's pings to know the connection is alive.
func (c *Conn) ping() {
	t := time.NewTimer(c.cfg.PingInterval)
	defer t.Stop()
	var data [8]byte
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		silent := time.Since(time.Unix(0, c.lastRead.Load()))
		switch {
		case c.pingSent.Load() && silent >= c.cfg.PingInterval+c.cfg.PingTimeout:
			c.close()
			return
		case !c.pingSent.Load() && silent >= c.cfg.PingInterval:
			c.pingSent.Store(true)
			data[0]++
			if c.write(func() error { return c.fr.WritePing(false, data) }, true) != nil {
				return
			}
			// Looked at again within PingInterval: once the answer is
			// back, the next ping goes PingInterval after it, so that
			// the relay hears from an idle agent that often.
			t.Reset(min(c.cfg.PingInterval, c.cfg.PingTimeout))
		default:
			if c.pingSent.Load() {
				t.Reset(max(c.cfg.PingInterval+c.cfg.PingTimeout-silent, time.Millisecond))
			} else {
				t.Reset(max(c.cfg.PingInterval-silent, time.Millisecond))
			}
		}
	}
}

// rttPing is the payload of the PINGs that measure the round trip; the
// liveness pings' first byte counts, and their last is zero.
var rttPing = [8]byte{'r', 't', 't', 0, 0, 0, 0, 1}

// rtt is the connection's round-trip time, 0 until measured; a PING
// measures it again when it is older than h2frame.RoundTripMaxAge (and
// again if that PING goes unanswered as long).
func (c *Conn) rtt(now time.Time) time.Duration {
	if c.cfg.fixedRTT > 0 {
		return c.cfg.fixedRTT
	}
	d, stale := c.roundTrip.Get(now)
	t := now.UnixNano()
	if at := c.rttPingAt.Load(); stale && (at == 0 || t-at > int64(h2frame.RoundTripMaxAge)) && c.rttPingAt.CompareAndSwap(at, t) {
		// Not under the caller's lock: the write may wait on the socket.
		go c.write(func() error { return c.fr.WritePing(false, rttPing) }, true)
	}
	return d
}

// headerBuf is where the HPACK encoder writes a header block.
type headerBuf struct{ b []byte }

func (h *headerBuf) Write(p []byte) (int, error) { h.b = append(h.b, p...); return len(p), nil }
