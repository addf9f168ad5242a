//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its Framer and hpack are what the relay's client is written on, and on Go 1.26 it is not a wrapper of net/http. This package is the relay side of the tunnel written on it (tunnel/internal/h2server the agent side); in package tunnel only relay_clients_h2.go names it. See PROTOCOL.md.

package h2client

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/h2frame"
	"github.com/clusterconnect/clusterconnect/internal/hold"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Settings are what a relay's client connections are made with.
type Settings struct {
	// InitialWindow is a stream's receive window to begin with, and
	// WindowLimit how far it may grow (at least InitialWindow).
	InitialWindow, WindowLimit int32
	// WindowBudget is what all grown windows may hold together beyond
	// InitialWindow each; zero or less: windows never grow.
	WindowBudget int64
	// WindowShare is how far a window grows out of whatever the budget
	// has left; past it, a window grows only while half the budget stays
	// free, so that windows grown that far leave the other half to
	// windows growing to their share. Zero or at least WindowLimit: no
	// such rule.
	WindowShare int32
	// MaxHeaderList bounds an answer's header list.
	MaxHeaderList uint32
	// Peer names the server in error messages, and ErrorPrefix begins
	// them: "" is the relay's, "the agent" and "tunnel: ".
	Peer, ErrorPrefix string
	// PingInterval, PingTimeout and WriteTimeout are the connection's
	// liveness bounds while it is idle; BusyPingAfter and BusyPingTimeout
	// take over while a stream is open: a connection that carries
	// requests and has received nothing for BusyPingAfter is pinged, and
	// dropped if no answer comes within BusyPingTimeout. Zero: the idle
	// bounds.
	PingInterval, PingTimeout, WriteTimeout time.Duration
	BusyPingAfter, BusyPingTimeout          time.Duration
}

// Config is what every client connection of a relay shares: its
// settings and one window budget.
type Config struct {
	initialWindow int32 // a stream's receive window to begin with
	windowLimit   int32 // how far a stream's window may grow
	windowShare   int32 // past it, growth leaves half the budget free
	budget        *windowBudget
	maxHeaderList uint32
	pingInterval  time.Duration
	pingTimeout   time.Duration
	busyAfter     time.Duration
	busyTimeout   time.Duration
	writeTimeout  time.Duration
	fixedRTT      time.Duration // tests: the round trip windows are tuned by
	peer, prefix  string
}

// NewConfig returns the shared config of a relay's client connections.
func NewConfig(s Settings) *Config {
	b := &windowBudget{total: max(s.WindowBudget, 0)}
	b.avail.Store(b.total)
	limit := max(s.WindowLimit, s.InitialWindow)
	share := limit
	if s.WindowShare > 0 {
		share = min(max(s.WindowShare, s.InitialWindow), limit)
	}
	return &Config{
		initialWindow: s.InitialWindow,
		windowLimit:   limit,
		windowShare:   share,
		budget:        b,
		maxHeaderList: s.MaxHeaderList,
		pingInterval:  s.PingInterval,
		pingTimeout:   s.PingTimeout,
		busyAfter:     cmp.Or(s.BusyPingAfter, s.PingInterval),
		busyTimeout:   cmp.Or(s.BusyPingTimeout, s.PingTimeout),
		writeTimeout:  s.WriteTimeout,
		peer:          cmp.Or(s.Peer, "the agent"),
		prefix:        cmp.Or(s.ErrorPrefix, "tunnel: "),
	}
}

// sentinel is err (errors.Is) in words that name the server.
func (c *Config) sentinel(err error) error {
	var msg string
	switch err {
	case ErrGoingAway:
		msg = c.prefix + c.peer + " is closing the connection"
	case ErrNoSlot:
		msg = c.prefix + "the connection to " + c.peer + " has no stream to spare"
	case ErrHeadersPeer:
		msg = c.prefix + "the header list is larger than " + c.peer + "'s advertised limit"
	default:
		msg = c.prefix + "the connection to " + c.peer + " closed"
	}
	return namedError{msg, err}
}

// namedError reads msg and is its sentinel.
type namedError struct {
	msg      string
	sentinel error
}

func (e namedError) Error() string        { return e.msg }
func (e namedError) Is(target error) bool { return target == e.sentinel }

// peerErr is an error about what the server did: the prefix, the
// server's name, then format (" reset the stream", "'s settings").
func (c *Config) peerErr(format string, a ...any) error {
	return fmt.Errorf(c.prefix+c.peer+format, a...)
}

// WindowInUse is how much of the window budget grown windows hold now.
func (c *Config) WindowInUse() int64 { return c.budget.inUse() }

// wholeRecords is the largest DATA payload of at most max bytes whose
// frame fills whole TLS records.
func wholeRecords(max uint32) uint32 {
	return (max+9)/TLSRecord*TLSRecord - 9
}

// TLSRecord is the most a TLS record carries. A connection's Write
// seals and sends each record on its own, so a frame of a record and
// nine bytes costs two records and two system calls: the project's DATA
// frames are sized to fill whole records, header included.
const TLSRecord = 16 << 10

// DataFrameSize is the payload of the largest DATA frame the relay takes
// from an agent (its SETTINGS_MAX_FRAME_SIZE): with its 9-byte header,
// four whole TLS records.
const DataFrameSize = 4*TLSRecord - 9

const (
	// maxFrameRead is the largest frame the relay takes from an agent:
	// 64 KiB DATA frames made downloads 12-17 % faster than the 16 KiB
	// default in interleaved runs; 128 KiB ones, no faster again. DATA
	// is read into the stream's buffer (readData); other frames go
	// through the Framer, which keeps a read buffer as big as the
	// largest frame it has read, so an agent's frames other than DATA
	// are what that buffer may grow to.
	maxFrameRead = DataFrameSize
	// maxFrameWrite is the largest frame the relay's client writes:
	// its Framer keeps a write buffer as large as the largest frame
	// it has written, so header blocks go in frames of at most HTTP/2's
	// default size, and DATA is written without the Framer (writeData).
	maxFrameWrite = 16 << 10
	// connWindow is the connection's receive window, given back as data
	// arrives: the streams' windows are what bound the relay's memory,
	// and a connection window never stops one stream for another's sake.
	connWindow = 1 << 30
	// initialConnWindow is the receive window every HTTP/2 connection
	// starts with (RFC 9113 §6.9.2), and a stream's send window until the
	// agent's SETTINGS say otherwise.
	initialConnWindow = 65535
	// max1xx is how many informational answers a request may get before
	// its final one.
	max1xx = 5
)

var (
	// ErrGoingAway and ErrNoSlot are what a stream the server did not
	// process fails with (errors.Is), the first when the server sent
	// GOAWAY, the second when the connection had no stream to spare;
	// ErrHeadersPeer what a request fails with whose header list is over
	// the server's limit. The errors themselves name the server
	// (Config.sentinel).
	ErrGoingAway   = errors.New("the server is closing the connection")
	ErrNoSlot      = errors.New("the connection has no stream to spare")
	errConnClosed  = errors.New("the connection closed")
	errBodyClosed  = errors.New("tunnel: the answer's body was closed")
	ErrHeadersPeer = errors.New("the header list is larger than the server's advertised limit")
)

// tunnelClient is one tunnel connection as the relay drives it.
type Conn struct {
	cfg  *Config
	conn net.Conn
	fr   *http2.Framer // ReadFrame: readLoop only; writes under wmu
	br   *connReader   // what fr reads; readLoop reads DATA frames itself (readData)

	wmu  sync.Mutex
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu          sync.Mutex
	flow        sync.Cond // send windows grew, or a stream or the connection ended
	streams     map[uint32]*h2Stream
	nextID      uint32
	reserved    int
	maxStreams  uint32
	peerWindow  int32 // the agent's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame   uint32
	peerHeaders uint64 // the agent's SETTINGS_MAX_HEADER_LIST_SIZE; 0: none
	connSend    int64
	goingAway   bool
	lastID      uint32 // from the agent's GOAWAY
	err         error  // set when the connection is done
	pings       map[[8]byte]chan struct{}

	// settingsIn is set once the server's first SETTINGS are in force;
	// settingsWait, made only for a caller of AwaitSettings (a relay's
	// idle agents keep none), is closed then or when the connection
	// fails first.
	settingsIn   bool
	settingsWait chan struct{}

	// The round trip to the agent, which a stream's window is tuned by:
	// first the SETTINGS exchange, then PINGs.
	roundTrip    h2frame.RoundTrip
	rttPinging   atomic.Bool
	settingsSent time.Time

	// lastRead is when the agent's last frame arrived (unix
	// nanoseconds); health, a timer, checks it (healthCheck).
	lastRead atomic.Int64
	// lastPing is when the last health ping went, or the connection last
	// became busy (unix nanoseconds).
	lastPing atomic.Int64
	health   *time.Timer

	// readLoop's own
	connRecv     int32
	canon        map[string]string
	settingsAckd bool
}

// tunnelClientState is what Relay.Conns reports of a connection.
type ConnState struct{ StreamsActive int }

// newTunnelClient starts HTTP/2 as the client on an agent's connection,
// writing through a hold.Conn so that a request's HEADERS leave with its
// body.
func New(cfg *Config, conn net.Conn) (*Conn, error) {
	hc := hold.NewConn(conn, cfg.writeTimeout, len(http2.ClientPreface))
	cc := &Conn{
		cfg:        cfg,
		conn:       hc,
		streams:    map[uint32]*h2Stream{},
		nextID:     1,
		maxStreams: 100, // until the agent's SETTINGS (x/net's choice too)
		peerWindow: initialConnWindow,
		peerFrame:  16 << 10,
		connSend:   initialConnWindow,
		connRecv:   connWindow,
	}
	cc.flow.L = &cc.mu
	cc.br = &connReader{Conn: conn}
	cc.fr = http2.NewFramer(hc, cc.br)
	cc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cc.fr.MaxHeaderListSize = cfg.maxHeaderList
	cc.fr.SetMaxReadFrameSize(maxFrameRead)
	cc.fr.SetReuseFrames()
	cc.henc = hpack.NewEncoder(&cc.hbuf)
	cc.lastRead.Store(time.Now().UnixNano())
	cc.health = time.AfterFunc(cfg.pingInterval, cc.healthCheck)

	cc.wmu.Lock()
	err := cc.write(func() error {
		if _, err := io.WriteString(hc, http2.ClientPreface); err != nil {
			return err
		}
		cc.settingsSent = time.Now()
		if err := cc.fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(cfg.initialWindow)},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameRead},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: cfg.maxHeaderList},
		); err != nil {
			return err
		}
		return cc.fr.WriteWindowUpdate(0, connWindow-initialConnWindow)
	})
	cc.wmu.Unlock()
	if err != nil {
		cc.fail(err)
		return nil, err
	}
	go cc.readLoop()
	return cc, nil
}

// write runs fn, which writes frames, under wmu with the write timeout;
// a failed write ends the connection.
func (cc *Conn) write(fn func() error) error {
	if cc.cfg.writeTimeout > 0 {
		cc.conn.SetWriteDeadline(time.Now().Add(cc.cfg.writeTimeout))
	}
	err := fn()
	if err != nil {
		go cc.fail(fmt.Errorf("%swriting to %s: %w", cc.cfg.prefix, cc.cfg.peer, err))
	}
	return err
}

// State reports the connection's open streams.
func (cc *Conn) State() ConnState {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return ConnState{StreamsActive: len(cc.streams)}
}

// Done reports whether the connection takes no new streams any more: it
// failed, was closed, or the server is going away.
func (cc *Conn) Done() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err != nil || cc.goingAway
}

// AwaitSettings waits until the server's first SETTINGS are in force, so
// that streams reserved from then on count against the server's own
// stream limit and not the 100 assumed before. It fails if the
// connection fails first, or ctx ends.
func (cc *Conn) AwaitSettings(ctx context.Context) error {
	cc.mu.Lock()
	if cc.settingsIn || cc.err != nil {
		defer cc.mu.Unlock()
		return cc.err
	}
	if cc.settingsWait == nil {
		cc.settingsWait = make(chan struct{})
	}
	wait := cc.settingsWait
	cc.mu.Unlock()
	select {
	case <-wait:
	case <-ctx.Done():
		return ctx.Err()
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err
}

// settingsDone marks the server's first SETTINGS in force, or the
// connection failed, and wakes AwaitSettings.
func (cc *Conn) settingsDone() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.settingsWait != nil && !cc.settingsIn {
		close(cc.settingsWait)
	}
	cc.settingsIn = true
}

// CloseIfIdle closes the connection if it carries no stream and none is
// reserved, and reports whether it did.
func (cc *Conn) CloseIfIdle() bool {
	cc.mu.Lock()
	idle := len(cc.streams) == 0 && cc.reserved == 0
	if idle && cc.err == nil {
		cc.goingAway = true // no stream is reserved from now on
	}
	cc.mu.Unlock()
	if idle {
		cc.fail(cc.cfg.sentinel(errConnClosed))
	}
	return idle
}

// ReserveNewRequest reserves a stream for a RoundTrip to come, if the
// connection can take one.
func (cc *Conn) ReserveNewRequest() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err != nil || cc.goingAway || uint32(len(cc.streams)+cc.reserved) >= cc.maxStreams {
		return false
	}
	cc.reserved++
	return true
}

// Close ends the connection: streams in flight fail.
func (cc *Conn) Close() error {
	cc.fail(cc.cfg.sentinel(errConnClosed))
	return nil
}

// fail ends the connection for err, once.
func (cc *Conn) fail(err error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	streams := make([]*h2Stream, 0, len(cc.streams))
	for _, s := range cc.streams {
		streams = append(streams, s)
	}
	for _, ch := range cc.pings {
		close(ch)
	}
	cc.pings = nil
	cc.flow.Broadcast()
	cc.mu.Unlock()
	cc.settingsDone()
	cc.health.Stop()
	cc.conn.Close()
	for _, s := range streams {
		s.connFailed(err)
	}
}

// goAwayAndFail tells the agent why before ending the connection.
func (cc *Conn) goAwayAndFail(code http2.ErrCode, err error) {
	cc.writeFrame(func(fr *http2.Framer) error { return fr.WriteGoAway(0, code, nil) })
	cc.fail(err)
}

// RoundTrip sends req on a new stream and returns the agent's answer,
// whose body reads the stream. It closes req.Body once done with it.
// The caller reserves the stream first with ReserveNewRequest, as every
// path of the relay's does; a RoundTrip that fails before sending gives
// the reservation back.
func (cc *Conn) RoundTrip(req *http.Request) (*http.Response, error) {
	fields, err := RequestFields(req)
	if err != nil {
		cc.unreserve()
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return cc.RoundTripFields(req, fields)
}

// RoundTripFields is RoundTrip with req's header list already made, so that a
// caller that measures it first (Relay.roundTrip) builds it once.
func (cc *Conn) RoundTripFields(req *http.Request, fields HeaderList) (*http.Response, error) {
	ctx := req.Context()
	body := requestBody(req)
	closeBody := func() {
		if body != nil {
			body.Close()
		}
	}
	contentLength := bodyLength(req)
	if err := ctx.Err(); err != nil {
		cc.unreserve()
		closeBody()
		return nil, err
	}
	size := FieldsSize(fields)
	var err error
	s := &h2Stream{
		cc:       cc,
		req:      req,
		body:     body,
		ready:    make(chan struct{}),
		target:   cc.cfg.initialWindow,
		avail:    cc.cfg.initialWindow,
		isHead:   req.Method == http.MethodHead,
		sendDone: body == nil,
	}
	s.cond.L = &s.mu

	cc.wmu.Lock()
	cc.mu.Lock()
	switch {
	case cc.err != nil:
		err = cc.err
	case cc.goingAway:
		err = cc.cfg.sentinel(ErrGoingAway)
	case cc.reserved > 0 && uint32(len(cc.streams)) < cc.maxStreams:
		cc.reserved--
	case cc.reserved > 0:
		cc.reserved-- // reserved before the server lowered its limit
		err = cc.cfg.sentinel(ErrNoSlot)
	case uint32(len(cc.streams)) >= cc.maxStreams:
		err = cc.cfg.sentinel(ErrNoSlot)
	}
	if err == nil && cc.peerHeaders > 0 && size > cc.peerHeaders {
		err = cc.cfg.sentinel(ErrHeadersPeer)
	}
	if err != nil {
		cc.mu.Unlock()
		cc.wmu.Unlock()
		closeBody()
		return nil, err
	}
	s.id = cc.nextID
	cc.nextID += 2
	s.sendWin = int64(cc.peerWindow)
	cc.streams[s.id] = s
	if len(cc.streams) == 1 {
		// Busy from now on: the next check comes sooner, and the busy
		// pings' clock starts.
		cc.lastPing.Store(time.Now().UnixNano())
		cc.health.Reset(max(cc.cfg.busyAfter-cc.silence(), 0))
	}
	s.mu.Lock()
	s.stopCtx = context.AfterFunc(ctx, func() { s.abort(ctx.Err(), true) })
	s.mu.Unlock()
	frameSize := min(int(cc.peerFrame), maxFrameWrite)
	cc.mu.Unlock()
	cc.hbuf.Reset()
	for _, f := range fields {
		cc.henc.WriteField(f)
	}
	err = cc.write(func() error { return h2frame.WriteHeaderBlock(cc.fr, s.id, body == nil, frameSize, cc.hbuf.Bytes()) })
	cc.shrinkHeaderBuffer()
	cc.wmu.Unlock()
	if err != nil {
		s.abort(err, false)
		return nil, err
	}
	if body != nil {
		go s.writeBody(contentLength)
	}
	<-s.ready
	if s.respErr != nil {
		return nil, s.respErr
	}
	return s.resp, nil
}

// Unreserve gives back a stream ReserveNewRequest reserved and no
// RoundTrip took.
func (cc *Conn) Unreserve() { cc.unreserve() }

func (cc *Conn) unreserve() {
	cc.mu.Lock()
	if cc.reserved > 0 {
		cc.reserved--
	}
	cc.mu.Unlock()
}

// writeTrailers ends a request with its trailers.
func (cc *Conn) writeTrailers(id uint32, trailer http.Header) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.mu.Lock()
	frameSize := min(int(cc.peerFrame), maxFrameWrite)
	cc.mu.Unlock()
	cc.hbuf.Reset()
	for k, vs := range trailer {
		for _, v := range vs {
			if httpguts.ValidHeaderFieldName(k) && httpguts.ValidHeaderFieldValue(v) {
				cc.henc.WriteField(hpack.HeaderField{Name: lowerHeader(k), Value: v})
			}
		}
	}
	err := cc.write(func() error { return h2frame.WriteHeaderBlock(cc.fr, id, true, frameSize, cc.hbuf.Bytes()) })
	cc.shrinkHeaderBuffer()
	return err
}

// shrinkHeaderBuffer lets go of a header block buffer that a large
// header list grew, which the connection would otherwise keep. Under wmu.
func (cc *Conn) shrinkHeaderBuffer() {
	if cc.hbuf.Cap() > maxFrameWrite {
		cc.hbuf = bytes.Buffer{}
	}
}

// dataFrames are the buffers DATA frames are written from: the Framer's
// own would stay as large as the largest body piece a connection ever
// sent, for the connection's life.
var dataFrames = sync.Pool{New: func() any { b := make([]byte, 0, frameHeaderLen+32<<10); return &b }}

// frameHeaderLen is an HTTP/2 frame header's length (RFC 9113 §4.1).
const frameHeaderLen = 9

// writeData writes a DATA frame of p on stream id, ending the stream if
// end.
func (cc *Conn) writeData(id uint32, end bool, p []byte) error {
	bp := dataFrames.Get().(*[]byte)
	defer dataFrames.Put(bp)
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	n := len(p)
	frame := append((*bp)[:0], byte(n>>16), byte(n>>8), byte(n), byte(http2.FrameData), flags, byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
	frame = append(frame, p...)
	*bp = frame[:0]
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	return cc.write(func() error {
		_, err := cc.conn.Write(frame)
		return err
	})
}

// writeFrame writes one frame under wmu; it reports whether it was sent.
func (cc *Conn) writeFrame(fn func(fr *http2.Framer) error) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	return cc.write(func() error { return fn(cc.fr) })
}

// forget removes an ended stream.
func (cc *Conn) forget(s *h2Stream) {
	cc.mu.Lock()
	if cc.streams[s.id] != s {
		cc.mu.Unlock()
		return
	}
	delete(cc.streams, s.id)
	idle := cc.goingAway && len(cc.streams) == 0
	cc.flow.Broadcast()
	cc.mu.Unlock()
	if idle {
		cc.fail(cc.cfg.sentinel(ErrGoingAway)) // drained: the agent closes its side too
	}
}

// awaitSend waits until s may send up to n bytes and takes them from its
// window and the connection's.
func (cc *Conn) awaitSend(s *h2Stream, n int) (int, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for {
		if cc.err != nil {
			return 0, cc.err
		}
		if err := s.sendErr(); err != nil {
			return 0, err
		}
		if s.sendWin > 0 && cc.connSend > 0 {
			k := min(int64(n), s.sendWin, cc.connSend, int64(wholeRecords(cc.peerFrame)))
			s.sendWin -= k
			cc.connSend -= k
			return int(k), nil
		}
		cc.flow.Wait()
	}
}
