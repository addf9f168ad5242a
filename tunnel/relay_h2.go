//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its Framer and hpack are what the relay's client is written on, and on Go 1.26 it is not a wrapper of net/http. This file is the only one of its side that names it. See PROTOCOL.md.

package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The relay's side of the tunnel is an HTTP/2 client on a connection the
// agent dialed, written on x/net's Framer and hpack. It is its own client,
// not x/net's, for one reason: the receive window of each response. x/net's
// client gives every stream the same window and returns exactly what was
// read; a window large enough for a download to run at speed would let
// every client that stops reading pin as much of the relay. Here a stream
// starts with MaxReceiveBufferPerStream and its window grows, up to
// StreamWindowLimit, only while its client keeps up with the agent, out of
// one budget for the whole relay (StreamWindowBudget); a client that stops
// reading stops its window from growing. BENCHMARKS.md, "A window that
// grows while its client reads".
//
// The relay only ever sends requests and reads answers: no server push,
// no priorities, one GOAWAY honoured as the agent drains.

// h2Config is what every tunnel connection of a relay shares.
type h2Config struct {
	initialWindow int32 // a stream's receive window to begin with
	windowLimit   int32 // how far a stream's window may grow
	budget        *windowBudget
	maxHeaderList uint32
	pingInterval  time.Duration
	pingTimeout   time.Duration
	writeTimeout  time.Duration
	fixedRTT      time.Duration // tests: the round trip windows are tuned by
}

func newH2Config(c *RelayConfig) *h2Config {
	limit := max(c.StreamWindowLimit, c.MaxReceiveBufferPerStream)
	b := &windowBudget{total: max(c.StreamWindowBudget, 0)}
	b.avail.Store(b.total)
	return &h2Config{
		initialWindow: c.MaxReceiveBufferPerStream,
		windowLimit:   limit,
		budget:        b,
		maxHeaderList: c.MaxHeaderBytes,
		pingInterval:  c.PingInterval,
		pingTimeout:   c.PingTimeout,
		writeTimeout:  c.WriteTimeout,
	}
}

// windowBudget is what all streams' windows may hold beyond their initial
// window, together.
type windowBudget struct {
	total int64
	avail atomic.Int64
}

// inUse is how much of the budget streams hold.
func (b *windowBudget) inUse() int64 { return b.total - b.avail.Load() }

// take takes up to want bytes and returns how many it took.
func (b *windowBudget) take(want int64) int64 {
	for {
		a := b.avail.Load()
		n := min(a, want)
		if n <= 0 {
			return 0
		}
		if b.avail.CompareAndSwap(a, a-n) {
			return n
		}
	}
}

func (b *windowBudget) give(n int64) {
	if n > 0 {
		b.avail.Add(n)
	}
}

const (
	// maxFrameRead is the largest DATA frame the relay takes from an
	// agent: 64 KiB frames made downloads 12-17 % faster than the 16 KiB
	// default in interleaved runs. Not larger: the Framer keeps a read
	// buffer per connection as big as the largest frame seen, and 1 MiB
	// would pin a mebibyte on each of thousands of connections after
	// one download.
	maxFrameRead = 64 << 10
	// connWindow is the connection's receive window, given back as data
	// arrives: the streams' windows are what bound the relay's memory,
	// and a connection window never stops one stream for another's sake.
	connWindow = 1 << 30
	// initialConnWindow is the receive window every HTTP/2 connection
	// starts with (RFC 9113 §6.9.2), and a stream's send window until the
	// agent's SETTINGS say otherwise.
	initialConnWindow = 65535
	// rttMaxAge is how old the connection's round-trip time may be when
	// a stream's window is tuned by it; older, a PING measures it again.
	rttMaxAge = 10 * time.Second
	// max1xx is how many informational answers a request may get before
	// its final one.
	max1xx = 5
)

var (
	errConnClosed  = errors.New("tunnel: the tunnel connection closed")
	errGoingAway   = errors.New("tunnel: the agent is closing this tunnel connection")
	errNoSlot      = errors.New("tunnel: the tunnel connection has no stream to spare")
	errBodyClosed  = errors.New("tunnel: the answer's body was closed")
	errTooMany1xx  = errors.New("tunnel: the agent sent too many informational answers")
	errHeadersPeer = errors.New("header list larger than the agent's advertised limit")
)

// tunnelClient is one tunnel connection as the relay drives it.
type tunnelClient struct {
	cfg  *h2Config
	conn net.Conn
	fr   *http2.Framer // ReadFrame: readLoop only; writes under wmu

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

	// The round trip to the agent, which a stream's window is tuned by:
	// first the SETTINGS exchange, then PINGs.
	rttNanos     atomic.Int64
	rttAt        atomic.Int64 // unix nanoseconds of the last sample
	rttPinging   atomic.Bool
	settingsSent time.Time

	// readLoop's own
	connRecv     int32
	canon        map[string]string
	settingsAckd bool
	idle         *time.Timer
}

// tunnelClientState is what Relay.Conns reports of a connection.
type tunnelClientState struct{ StreamsActive int }

// newTunnelClient starts HTTP/2 as the client on an agent's connection,
// writing through a holdConn so that a request's HEADERS leave with its
// body.
func newTunnelClient(cfg *h2Config, conn net.Conn) (*tunnelClient, error) {
	hc := newHoldConn(conn, cfg.writeTimeout, len(http2.ClientPreface))
	cc := &tunnelClient{
		cfg:        cfg,
		conn:       hc,
		streams:    map[uint32]*h2Stream{},
		nextID:     1,
		maxStreams: 100, // until the agent's SETTINGS (x/net's choice too)
		peerWindow: initialConnWindow,
		peerFrame:  16 << 10,
		connSend:   initialConnWindow,
		connRecv:   connWindow,
		canon:      map[string]string{},
	}
	cc.flow.L = &cc.mu
	cc.fr = http2.NewFramer(hc, bufio.NewReader(conn))
	cc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	cc.fr.MaxHeaderListSize = cfg.maxHeaderList
	cc.fr.SetMaxReadFrameSize(maxFrameRead)
	cc.fr.SetReuseFrames()
	cc.henc = hpack.NewEncoder(&cc.hbuf)
	cc.idle = time.AfterFunc(cfg.pingInterval, cc.healthCheck)

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
func (cc *tunnelClient) write(fn func() error) error {
	if cc.cfg.writeTimeout > 0 {
		cc.conn.SetWriteDeadline(time.Now().Add(cc.cfg.writeTimeout))
	}
	err := fn()
	if err != nil {
		go cc.fail(fmt.Errorf("tunnel: writing to the agent: %w", err))
	}
	return err
}

// State reports the connection's open streams.
func (cc *tunnelClient) State() tunnelClientState {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return tunnelClientState{StreamsActive: len(cc.streams)}
}

// ReserveNewRequest reserves a stream for a RoundTrip to come, if the
// connection can take one.
func (cc *tunnelClient) ReserveNewRequest() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err != nil || cc.goingAway || uint32(len(cc.streams)+cc.reserved) >= cc.maxStreams {
		return false
	}
	cc.reserved++
	return true
}

// Close ends the connection: streams in flight fail.
func (cc *tunnelClient) Close() error {
	cc.fail(errConnClosed)
	return nil
}

// fail ends the connection for err, once.
func (cc *tunnelClient) fail(err error) {
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
	cc.idle.Stop()
	cc.conn.Close()
	for _, s := range streams {
		s.connFailed(err)
	}
}

// goAwayAndFail tells the agent why before ending the connection.
func (cc *tunnelClient) goAwayAndFail(code http2.ErrCode, err error) {
	cc.writeFrame(func(fr *http2.Framer) error { return fr.WriteGoAway(0, code, nil) })
	cc.fail(err)
}

// RoundTrip sends req on a new stream and returns the agent's answer,
// whose body reads the stream. It closes req.Body once done with it.
// The caller reserves the stream first with ReserveNewRequest, as every
// path of the relay's does; a RoundTrip that fails before sending gives
// the reservation back.
func (cc *tunnelClient) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	closeBody := func() {
		if body != nil {
			body.Close()
		}
	}
	contentLength := int64(0)
	if body != nil {
		contentLength = req.ContentLength
		if contentLength == 0 {
			contentLength = -1
		}
	}
	fields, err := requestFields(req, contentLength)
	if err != nil {
		cc.unreserve()
		closeBody()
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		cc.unreserve()
		closeBody()
		return nil, err
	}
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
		err = errGoingAway
	case cc.reserved > 0:
		cc.reserved--
	case uint32(len(cc.streams)) >= cc.maxStreams:
		err = errNoSlot
	}
	if err == nil && cc.peerHeaders > 0 && fieldsSize(fields) > cc.peerHeaders {
		err = errHeadersPeer
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
	s.mu.Lock()
	s.stopCtx = context.AfterFunc(ctx, func() { s.abort(ctx.Err(), true) })
	s.mu.Unlock()
	frameSize := int(cc.peerFrame)
	cc.mu.Unlock()
	cc.hbuf.Reset()
	for _, f := range fields {
		cc.henc.WriteField(f)
	}
	err = cc.write(func() error { return cc.writeHeaders(s.id, body == nil, frameSize, cc.hbuf.Bytes()) })
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

func (cc *tunnelClient) unreserve() {
	cc.mu.Lock()
	if cc.reserved > 0 {
		cc.reserved--
	}
	cc.mu.Unlock()
}

// writeHeaders writes a header block as HEADERS and CONTINUATION frames
// of at most frameSize bytes. Under wmu.
func (cc *tunnelClient) writeHeaders(id uint32, endStream bool, frameSize int, block []byte) error {
	first := true
	for first || len(block) > 0 {
		chunk := block[:min(len(block), frameSize)]
		block = block[len(chunk):]
		var err error
		if first {
			err = cc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: endStream, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = cc.fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeTrailers ends a request with its trailers.
func (cc *tunnelClient) writeTrailers(id uint32, trailer http.Header) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.mu.Lock()
	frameSize := int(cc.peerFrame)
	cc.mu.Unlock()
	cc.hbuf.Reset()
	for k, vs := range trailer {
		for _, v := range vs {
			if httpguts.ValidHeaderFieldName(k) && httpguts.ValidHeaderFieldValue(v) {
				cc.henc.WriteField(hpack.HeaderField{Name: lowerHeader(k), Value: v})
			}
		}
	}
	return cc.write(func() error { return cc.writeHeaders(id, true, frameSize, cc.hbuf.Bytes()) })
}

// writeFrame writes one frame under wmu; it reports whether it was sent.
func (cc *tunnelClient) writeFrame(fn func(fr *http2.Framer) error) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	return cc.write(func() error { return fn(cc.fr) })
}

// forget removes an ended stream.
func (cc *tunnelClient) forget(s *h2Stream) {
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
		cc.fail(errGoingAway) // drained: the agent closes its side too
	}
}

// requestFields is req's header list as HTTP/2 sends it.
func requestFields(req *http.Request, contentLength int64) ([]hpack.HeaderField, error) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return nil, fmt.Errorf("tunnel: invalid Host %q", host)
	}
	if !validMethod(req.Method) {
		return nil, fmt.Errorf("tunnel: invalid method %q", req.Method)
	}
	fields := make([]hpack.HeaderField, 0, 5+len(req.Header))
	fields = append(fields, hpack.HeaderField{Name: ":authority", Value: host}, hpack.HeaderField{Name: ":method", Value: req.Method})
	if req.Method != http.MethodConnect {
		path := req.URL.RequestURI()
		if path == "" {
			path = "/"
		}
		fields = append(fields, hpack.HeaderField{Name: ":path", Value: path}, hpack.HeaderField{Name: ":scheme", Value: "https"})
	}
	for k, vs := range req.Header {
		name := lowerHeader(k)
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("tunnel: invalid header name %q", k)
		}
		switch name {
		case "host", "content-length", "connection", "proxy-connection", "transfer-encoding", "upgrade", "keep-alive":
			continue // HTTP/1.1's, or set below
		case "te":
			for _, v := range vs {
				if strings.EqualFold(v, "trailers") {
					fields = append(fields, hpack.HeaderField{Name: "te", Value: "trailers"})
					break
				}
			}
			continue
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("tunnel: invalid value of header %q", k)
			}
			fields = append(fields, hpack.HeaderField{Name: name, Value: v})
		}
	}
	if len(req.Trailer) > 0 {
		names := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			if !httpguts.ValidHeaderFieldName(k) {
				return nil, fmt.Errorf("tunnel: invalid trailer name %q", k)
			}
			names = append(names, lowerHeader(k))
		}
		slices.Sort(names)
		fields = append(fields, hpack.HeaderField{Name: "trailer", Value: strings.Join(names, ",")})
	}
	if contentLength > 0 || (contentLength == 0 && bodyMethod(req.Method)) {
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(contentLength, 10)})
	}
	return fields, nil
}

// lowerHeaders are the lower-case names of common request headers, so
// that sending them allocates nothing.
var lowerHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Content-Type", "Content-Encoding", "Cookie", "If-Match", "If-None-Match", "If-Modified-Since", "Origin",
		"Referer", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Remote-User",
		"X-Remote-Group", "Impersonate-User", "Impersonate-Group", "Impersonate-Uid", "Audit-Id", "Kubectl-Command",
		"Kubectl-Session", "X-Stream-Protocol-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Key",
		"Sec-Websocket-Version", "Traceparent", "Tracestate", "Baggage"} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

func lowerHeader(k string) string {
	if v, ok := lowerHeaders[k]; ok {
		return v
	}
	return strings.ToLower(k)
}

// bodyMethod reports whether a request of this method says
// Content-Length: 0 for an empty body, as net/http does.
func bodyMethod(m string) bool {
	return m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// fieldsSize is a header list's size as SETTINGS_MAX_HEADER_LIST_SIZE
// counts it.
func fieldsSize(fields []hpack.HeaderField) uint64 {
	var n uint64
	for _, f := range fields {
		n += uint64(f.Size())
	}
	return n
}

// readLoop reads the agent's frames until the connection ends.
func (cc *tunnelClient) readLoop() {
	for {
		f, err := cc.fr.ReadFrame()
		cc.idle.Reset(cc.cfg.pingInterval)
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if s := cc.stream(se.StreamID); s != nil {
					s.fail(fmt.Errorf("tunnel: the agent's answer is malformed: %w", err), se.Code)
				}
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				cc.goAwayAndFail(http2.ErrCode(ce), fmt.Errorf("tunnel: the agent broke HTTP/2: %w", err))
				return
			}
			cc.fail(fmt.Errorf("tunnel: reading from the agent: %w", err))
			return
		}
		if err := cc.process(f); err != nil {
			cc.goAwayAndFail(http2.ErrCodeProtocol, err)
			return
		}
	}
}

// stream returns the open stream id, or nil.
func (cc *tunnelClient) stream(id uint32) *h2Stream {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.streams[id]
}

// process handles one frame; an error ends the connection.
func (cc *tunnelClient) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return cc.processHeaders(f)
	case *http2.DataFrame:
		return cc.processData(f)
	case *http2.RSTStreamFrame:
		if s := cc.stream(f.StreamID); s != nil {
			s.peerReset(f.ErrCode)
		}
	case *http2.SettingsFrame:
		return cc.processSettings(f)
	case *http2.WindowUpdateFrame:
		return cc.processWindowUpdate(f)
	case *http2.PingFrame:
		if f.IsAck() {
			cc.mu.Lock()
			if ch := cc.pings[f.Data]; ch != nil {
				close(ch)
				delete(cc.pings, f.Data)
			}
			cc.mu.Unlock()
			return nil
		}
		return cc.writeFrame(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
	case *http2.GoAwayFrame:
		cc.processGoAway(f)
	case *http2.PushPromiseFrame:
		return errors.New("tunnel: the agent pushed a stream, which the relay disabled")
	}
	return nil // priorities and unknown frames
}

func (cc *tunnelClient) processHeaders(f *http2.MetaHeadersFrame) error {
	s := cc.stream(f.StreamID)
	if s == nil {
		if f.StreamID >= cc.nextIDNow() {
			return fmt.Errorf("tunnel: the agent answered stream %d, never opened", f.StreamID)
		}
		return nil // a stream the relay reset
	}
	if f.Truncated {
		s.fail(fmt.Errorf("%w: the agent's answer has more than %d bytes of headers", ErrHeadersTooLarge, cc.cfg.maxHeaderList), http2.ErrCodeProtocol)
		return nil
	}
	if s.gotHeaders() {
		s.trailers(cc.header(f.RegularFields()), f.StreamEnded())
		return nil
	}
	status := f.PseudoValue("status")
	code, err := strconv.Atoi(status)
	if len(status) != 3 || err != nil || code < 100 {
		s.fail(fmt.Errorf("tunnel: the agent answered with status %q", status), http2.ErrCodeProtocol)
		return nil
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols || f.StreamEnded() {
			s.fail(fmt.Errorf("tunnel: the agent answered %d in HTTP/2", code), http2.ErrCodeProtocol)
		} else if s.n1xx++; s.n1xx > max1xx {
			s.fail(errTooMany1xx, http2.ErrCodeProtocol)
		}
		return nil
	}
	h := cc.header(f.RegularFields())
	resp := &http.Response{
		Status:        status + " " + http.StatusText(code),
		StatusCode:    code,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		ContentLength: -1,
		Request:       s.req,
	}
	if cl := h["Content-Length"]; len(cl) == 1 {
		n, err := strconv.ParseUint(cl[0], 10, 63)
		if err != nil {
			s.fail(fmt.Errorf("tunnel: the agent answered with Content-Length %q", cl[0]), http2.ErrCodeProtocol)
			return nil
		}
		resp.ContentLength = int64(n)
	} else if len(cl) > 1 {
		s.fail(errors.New("tunnel: the agent answered with more than one Content-Length"), http2.ErrCodeProtocol)
		return nil
	} else if f.StreamEnded() && !s.isHead {
		resp.ContentLength = 0
	}
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			switch k {
			case "", "Transfer-Encoding", "Trailer", "Content-Length":
				continue
			}
			if resp.Trailer == nil {
				resp.Trailer = http.Header{}
			}
			resp.Trailer[k] = nil
		}
	}
	s.answer(resp, f.StreamEnded())
	return nil
}

// header builds an http.Header from fields, keeping canonical names of
// the connection's common headers.
func (cc *tunnelClient) header(fields []hpack.HeaderField) http.Header {
	h := make(http.Header, len(fields))
	for _, f := range fields {
		k, ok := cc.canon[f.Name]
		if !ok {
			k = http.CanonicalHeaderKey(f.Name)
			if len(cc.canon) < 64 && len(f.Name) < 64 {
				cc.canon[f.Name] = k
			}
		}
		h[k] = append(h[k], f.Value)
	}
	return h
}

func (cc *tunnelClient) nextIDNow() uint32 {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.nextID
}

func (cc *tunnelClient) processData(f *http2.DataFrame) error {
	n := int32(f.Length)
	if n > cc.connRecv {
		return errors.New("tunnel: the agent sent past the connection's window")
	}
	cc.connRecv -= n
	if cc.connRecv < connWindow/2 {
		add := connWindow - cc.connRecv
		cc.connRecv = connWindow
		if err := cc.writeFrame(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, uint32(add)) }); err != nil {
			return err
		}
	}
	s := cc.stream(f.StreamID)
	if s == nil {
		if f.StreamID >= cc.nextIDNow() {
			return fmt.Errorf("tunnel: the agent sent data on stream %d, never opened", f.StreamID)
		}
		return nil // a stream the relay reset: the connection's window is back already
	}
	s.data(f.Data(), n, f.StreamEnded())
	return nil
}

func (cc *tunnelClient) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		if !cc.settingsAckd {
			cc.settingsAckd = true
			cc.sampleRTT(time.Since(cc.settingsSent))
		}
		return nil
	}
	var henc uint32
	cc.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxConcurrentStreams:
			cc.maxStreams = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - int64(cc.peerWindow)
			for _, st := range cc.streams {
				st.sendWin += delta
			}
			cc.peerWindow = int32(s.Val)
			cc.flow.Broadcast()
		case http2.SettingMaxFrameSize:
			cc.peerFrame = s.Val
		case http2.SettingMaxHeaderListSize:
			cc.peerHeaders = uint64(s.Val)
		case http2.SettingHeaderTableSize:
			henc = s.Val + 1
		}
		return nil
	})
	cc.mu.Unlock()
	if err != nil {
		return fmt.Errorf("tunnel: the agent's settings: %w", err)
	}
	return cc.writeFrame(func(fr *http2.Framer) error {
		if henc > 0 {
			cc.henc.SetMaxDynamicTableSizeLimit(henc - 1)
		}
		return fr.WriteSettingsAck()
	})
}

func (cc *tunnelClient) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	const maxWindow = 1<<31 - 1
	if f.StreamID == 0 {
		cc.connSend += int64(f.Increment)
		if cc.connSend > maxWindow {
			return errors.New("tunnel: the agent's connection window overflowed")
		}
	} else if s := cc.streams[f.StreamID]; s != nil {
		s.sendWin += int64(f.Increment)
		if s.sendWin > maxWindow {
			go s.fail(errors.New("tunnel: the agent's stream window overflowed"), http2.ErrCodeFlowControl)
		}
	}
	cc.flow.Broadcast()
	return nil
}

func (cc *tunnelClient) processGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goingAway = true
	cc.lastID = f.LastStreamID
	var gone []*h2Stream
	for id, s := range cc.streams {
		if id > f.LastStreamID {
			gone = append(gone, s)
		}
	}
	idle := len(cc.streams) == len(gone)
	cc.mu.Unlock()
	for _, s := range gone {
		s.fail(fmt.Errorf("%w before serving this request", errGoingAway), http2.ErrCodeCancel)
	}
	if idle {
		cc.fail(errGoingAway)
	}
}

// healthCheck pings a connection that has been silent for the ping
// interval, and ends it if the answer does not come within the timeout.
func (cc *tunnelClient) healthCheck() { cc.ping(true) }

// ping sends a PING and takes its round trip as a sample of the
// connection's; failIfLate ends the connection if no answer comes within
// the ping timeout.
func (cc *tunnelClient) ping(failIfLate bool) {
	var data [8]byte
	rand.Read(data[:])
	ch := make(chan struct{})
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	if cc.pings == nil {
		cc.pings = map[[8]byte]chan struct{}{}
	}
	cc.pings[data] = ch
	cc.mu.Unlock()
	start := time.Now()
	if cc.writeFrame(func(fr *http2.Framer) error { return fr.WritePing(false, data) }) != nil {
		return
	}
	t := time.NewTimer(cc.cfg.pingTimeout)
	defer t.Stop()
	select {
	case <-ch:
		if cc.alive() {
			cc.sampleRTT(time.Since(start))
		}
	case <-t.C:
		if failIfLate {
			cc.fail(errors.New("tunnel: the agent did not answer a ping"))
		}
		cc.mu.Lock()
		delete(cc.pings, data)
		cc.mu.Unlock()
	}
}

// alive reports whether the connection has not ended.
func (cc *tunnelClient) alive() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err == nil
}

// sampleRTT adds a round trip to the connection's smoothed one.
func (cc *tunnelClient) sampleRTT(d time.Duration) {
	if old := cc.rttNanos.Load(); old > 0 {
		d = (7*time.Duration(old) + d) / 8
	}
	cc.rttNanos.Store(int64(d))
	cc.rttAt.Store(time.Now().UnixNano())
}

// rtt is the connection's round-trip time, 0 until measured; a PING
// measures it again when it is older than rttMaxAge.
func (cc *tunnelClient) rtt(now time.Time) time.Duration {
	if cc.cfg.fixedRTT > 0 {
		return cc.cfg.fixedRTT
	}
	if now.UnixNano()-cc.rttAt.Load() > int64(rttMaxAge) && cc.rttPinging.CompareAndSwap(false, true) {
		go func() {
			defer cc.rttPinging.Store(false)
			cc.ping(false)
		}()
	}
	return time.Duration(cc.rttNanos.Load())
}

// awaitSend waits until s may send up to n bytes and takes them from its
// window and the connection's.
func (cc *tunnelClient) awaitSend(s *h2Stream, n int) (int, error) {
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
			k := min(int64(n), s.sendWin, cc.connSend, int64(cc.peerFrame))
			s.sendWin -= k
			cc.connSend -= k
			return int(k), nil
		}
		cc.flow.Wait()
	}
}

// h2Stream is one request and its answer.
type h2Stream struct {
	cc      *tunnelClient
	id      uint32
	req     *http.Request
	body    io.ReadCloser // the request's; nil without one
	isHead  bool
	stopCtx func() bool // under mu

	ready   chan struct{} // closed once resp or respErr is set
	resp    *http.Response
	respErr error
	n1xx    int // readLoop's

	sendWin int64 // under cc.mu

	mu         sync.Mutex
	cond       sync.Cond // data, an end, or an error for the reader
	buf        chunks
	headers    bool
	recvEnd    bool      // END_STREAM received
	sendDone   bool      // END_STREAM sent, or sending given up
	sendStop   error     // why sending must stop
	err        error     // what Read returns once the buffer is empty
	reset      bool      // RST_STREAM sent or received
	released   bool      // the body's buffers and budget are given back
	received   int64     // DATA bytes of the answer
	target     int32     // the window the relay keeps open for this stream
	avail      int32     // what the agent may still send
	charged    int64     // taken from the budget
	read       int64     // bytes the reader took
	epochRead  int64     // read at the start of the tuning epoch
	epochStart time.Time // when the tuning epoch began
	bodyBytes  int64     // Content-Length of the answer, or -1
}

func (s *h2Stream) gotHeaders() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headers
}

// answer delivers the answer's headers to RoundTrip.
func (s *h2Stream) answer(resp *http.Response, ended bool) {
	s.mu.Lock()
	if s.headers || s.err != nil {
		s.mu.Unlock()
		return
	}
	s.headers = true
	s.bodyBytes = resp.ContentLength
	s.epochStart = time.Now()
	if ended || s.isHead {
		resp.Body = http.NoBody
	} else {
		resp.Body = &h2Body{s: s}
	}
	s.resp = resp
	s.mu.Unlock()
	close(s.ready)
	if ended {
		s.endRecv(nil)
	} else if s.isHead {
		// The body of a HEAD answer is nobody's: free the stream when it
		// ends, which it may not do for the agent's sake.
		s.release()
	}
}

// data takes a DATA frame's payload; n is its length, padding included.
func (s *h2Stream) data(p []byte, n int32, end bool) {
	s.mu.Lock()
	if !s.headers || s.recvEnd {
		s.mu.Unlock()
		s.fail(errors.New("tunnel: the agent sent data out of place"), http2.ErrCodeStreamClosed)
		return
	}
	if n > s.avail {
		s.mu.Unlock()
		s.fail(errors.New("tunnel: the agent sent past the stream's window"), http2.ErrCodeFlowControl)
		return
	}
	s.avail -= n
	s.received += int64(len(p))
	if s.bodyBytes >= 0 && s.received > s.bodyBytes {
		s.mu.Unlock()
		s.fail(fmt.Errorf("tunnel: the agent sent more than its Content-Length of %d", s.bodyBytes), http2.ErrCodeProtocol)
		return
	}
	if len(p) > 0 && !s.released {
		s.buf.write(p)
		s.cond.Broadcast()
	}
	s.mu.Unlock()
	if pad := n - int32(len(p)); pad > 0 {
		s.returnWindow(0) // padding is nobody's to read
	}
	if end {
		s.endRecv(nil)
	}
}

// trailers ends the answer with its trailers.
func (s *h2Stream) trailers(h http.Header, ended bool) {
	if !ended {
		s.fail(errors.New("tunnel: the agent sent trailers that do not end the stream"), http2.ErrCodeProtocol)
		return
	}
	s.mu.Lock()
	if s.resp != nil && !s.recvEnd && s.err == nil {
		if s.resp.Trailer == nil {
			s.resp.Trailer = http.Header{}
		}
		for k, vs := range h {
			s.resp.Trailer[k] = vs
		}
	}
	s.mu.Unlock()
	s.endRecv(nil)
}

// endRecv marks the answer complete.
func (s *h2Stream) endRecv(err error) {
	s.mu.Lock()
	if s.recvEnd {
		s.mu.Unlock()
		return
	}
	s.recvEnd = true
	if s.err == nil {
		s.err = io.EOF
		if s.bodyBytes >= 0 && s.received < s.bodyBytes && !s.isHead {
			s.err = fmt.Errorf("tunnel: the agent's answer ended %d bytes short of its Content-Length: %w", s.bodyBytes-s.received, io.ErrUnexpectedEOF)
		}
	}
	s.cond.Broadcast()
	done := s.sendDone
	s.mu.Unlock()
	if done {
		s.end()
	}
}

// end frees a stream both sides are done with.
func (s *h2Stream) end() {
	s.mu.Lock()
	stop := s.stopCtx
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.cc.forget(s)
}

// peerReset handles the agent's RST_STREAM. After the whole answer it
// only stops the request's body (the agent needs no more of it);
// otherwise the stream fails.
func (s *h2Stream) peerReset(code http2.ErrCode) {
	s.mu.Lock()
	s.reset = true
	complete := s.recvEnd
	s.mu.Unlock()
	if complete {
		s.stopSending(errors.New("tunnel: the agent needs no more of the request body"), false)
		s.end()
		return
	}
	s.abortWith(fmt.Errorf("tunnel: the agent reset the stream: %v", code), 0)
}

// fail ends the stream for err, telling the agent with code.
func (s *h2Stream) fail(err error, code http2.ErrCode) { s.abortWith(err, code) }

// abort ends the stream for err on the relay's side (a cancelled request,
// a closed body, a failed write), telling the agent if asked.
func (s *h2Stream) abort(err error, tell bool) {
	code := http2.ErrCode(0)
	if tell {
		code = http2.ErrCodeCancel
	}
	s.abortWith(err, code)
}

// abortWith ends the stream for err; a non-zero code is sent to the agent
// as RST_STREAM unless the stream is already reset or over.
func (s *h2Stream) abortWith(err error, code http2.ErrCode) {
	s.mu.Lock()
	over := s.recvEnd && s.sendDone
	sendRST := code != 0 && !s.reset && !over
	if sendRST {
		s.reset = true
	}
	if s.err == nil {
		s.err = err
	}
	s.recvEnd = true
	s.sendDone = true
	if s.sendStop == nil {
		s.sendStop = err
	}
	first := !s.headers
	s.headers = true
	s.cond.Broadcast()
	s.mu.Unlock()
	if first {
		s.respErr = err
		close(s.ready)
	}
	s.cc.flow.L.Lock()
	s.cc.flow.Broadcast() // a body writer waiting for window
	s.cc.flow.L.Unlock()
	if s.body != nil {
		// Unblocks a body writer reading it; in its own goroutine, as
		// net/http's request bodies wait for a Read in progress.
		go s.body.Close()
	}
	if sendRST {
		s.cc.writeFrame(func(fr *http2.Framer) error { return fr.WriteRSTStream(s.id, code) })
	}
	s.end()
	if first {
		s.release()
	}
}

// connFailed ends the stream because its connection ended; an answer
// already received whole stays readable.
func (s *h2Stream) connFailed(err error) {
	s.mu.Lock()
	complete := s.recvEnd && s.err == io.EOF
	s.mu.Unlock()
	if complete {
		s.stopSending(err, false)
		s.end()
		return
	}
	s.abortWith(fmt.Errorf("%w: %w", errConnClosed, err), 0)
}

// stopSending makes the request's body writer give up; tell resets the
// stream, so that the agent stops waiting for the rest.
func (s *h2Stream) stopSending(err error, tell bool) {
	s.mu.Lock()
	wasDone := s.sendDone
	s.sendDone = true
	if s.sendStop == nil {
		s.sendStop = err
	}
	sendRST := tell && !wasDone && !s.reset
	if sendRST {
		s.reset = true
	}
	s.mu.Unlock()
	if wasDone {
		return
	}
	s.cc.flow.L.Lock()
	s.cc.flow.Broadcast()
	s.cc.flow.L.Unlock()
	if s.body != nil {
		go s.body.Close()
	}
	if sendRST {
		s.cc.writeFrame(func(fr *http2.Framer) error { return fr.WriteRSTStream(s.id, http2.ErrCodeCancel) })
	}
}

func (s *h2Stream) sendErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sendStop
}

// writeBody sends the request's body, then END_STREAM.
func (s *h2Stream) writeBody(contentLength int64) {
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	cc := s.cc
	var sent int64
	for {
		n, rerr := s.body.Read(buf)
		sent += int64(n)
		if contentLength >= 0 && sent > contentLength {
			s.abort(fmt.Errorf("tunnel: the request body is longer than its Content-Length of %d", contentLength), true)
			return
		}
		last := rerr == io.EOF || (contentLength >= 0 && sent == contentLength && rerr == nil)
		if rerr != nil && rerr != io.EOF {
			if err := s.sendErr(); err == nil {
				s.abort(fmt.Errorf("tunnel: reading the request body: %w", rerr), true)
			}
			return
		}
		if last && contentLength >= 0 && sent < contentLength {
			s.abort(fmt.Errorf("tunnel: the request body ended %d bytes short of its Content-Length", contentLength-sent), true)
			return
		}
		p := buf[:n]
		trailers := last && len(s.req.Trailer) > 0
		for len(p) > 0 || last {
			k := 0
			if len(p) > 0 {
				var err error
				if k, err = cc.awaitSend(s, len(p)); err != nil {
					return
				}
			}
			end := last && k == len(p)
			if k > 0 || (end && !trailers) {
				if err := cc.writeFrame(func(fr *http2.Framer) error { return fr.WriteData(s.id, end && !trailers, p[:k]) }); err != nil {
					return
				}
			}
			p = p[k:]
			if end && trailers {
				if err := cc.writeTrailers(s.id, s.req.Trailer); err != nil {
					return
				}
			}
			if end {
				s.body.Close()
				s.mu.Lock()
				s.sendDone = true
				done := s.recvEnd
				s.mu.Unlock()
				if done {
					s.end()
				}
				return
			}
		}
	}
}

var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// h2Body is an answer's body: it reads the stream.
type h2Body struct{ s *h2Stream }

func (b *h2Body) Read(p []byte) (int, error) {
	s := b.s
	s.mu.Lock()
	for s.buf.len == 0 && s.err == nil {
		s.cond.Wait()
	}
	if s.buf.len == 0 {
		err := s.err
		s.mu.Unlock()
		if err == io.EOF {
			s.release()
		}
		return 0, err
	}
	n := s.buf.read(p)
	s.mu.Unlock()
	s.returnWindow(n)
	return n, nil
}

// Close ends the answer; the agent is told to stop sending if it has not
// finished.
func (b *h2Body) Close() error {
	s := b.s
	s.mu.Lock()
	over := s.recvEnd && s.err == io.EOF
	s.mu.Unlock()
	if over {
		s.stopSending(errBodyClosed, true)
		s.end()
	} else {
		s.abort(errBodyClosed, true)
	}
	s.release()
	return nil
}

// release frees the stream's buffer and gives its budget back.
func (s *h2Stream) release() {
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		return
	}
	s.released = true
	s.buf.free()
	charged := s.charged
	s.charged = 0
	s.mu.Unlock()
	s.cc.cfg.budget.give(charged)
}

// returnWindow gives the agent back what the reader took, once it is a
// quarter of the stream's window, and grows the window while the reader
// keeps up, as QUIC implementations tune theirs: if the reader took half
// a window or more in less than two round trips to the agent (4 × the
// fraction of the window × RTT), the window is what would hold the stream
// back, and it doubles, up to the limit and as the budget allows. A
// reader that stops, or reads slower than the agent's window allows,
// never grows it.
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
		if rtt := cc.rtt(now); rtt > 0 && now.Sub(s.epochStart) < time.Duration(4*float64(inEpoch)/float64(s.target)*float64(rtt)) {
			got := int32(cfg.budget.take(int64(min(s.target, cfg.windowLimit-s.target))))
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
// a stream wastes at most one piece's room (a 64 KiB window never holds
// more than 80 KiB), large enough to copy in few pieces.
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
