//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its Framer and hpack are what the relay's client is written on, and on Go 1.26 it is not a wrapper of net/http. This package is the relay side of the tunnel written on it (tunnel/internal/h2server the agent side); in package tunnel only relay_clients_h2.go names it. See PROTOCOL.md.

package h2client

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// What the agent sends: the relay's client reads it on one goroutine per
// connection, and keeps the round trip windows are tuned by.

// readLoop reads the agent's frames until the connection ends.
func (cc *Conn) readLoop() {
	for {
		fh, err := cc.fr.ReadFrameHeader()
		var f http2.Frame
		var protoErr error
		switch {
		case err != nil:
		case fh.Type == http2.FrameData && fh.StreamID != 0:
			err, protoErr = cc.readData(fh) // f stays nil: the frame is handled
		default:
			f, err = cc.fr.ReadFrameForHeader(fh)
		}
		cc.lastRead.Store(time.Now().UnixNano())
		if protoErr != nil {
			cc.goAwayAndFail(http2.ErrCodeProtocol, protoErr)
			return
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if s := cc.stream(se.StreamID); s != nil {
					s.fail(cc.cfg.peerErr("'s answer is malformed: %w", err), se.Code)
				}
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				cc.goAwayAndFail(http2.ErrCode(ce), cc.cfg.peerErr(" broke HTTP/2: %w", err))
				return
			}
			cc.fail(fmt.Errorf("%sreading from %s: %w", cc.cfg.prefix, cc.cfg.peer, err))
			return
		}
		if f == nil {
			continue
		}
		if err := cc.process(f); err != nil {
			cc.goAwayAndFail(http2.ErrCodeProtocol, err)
			return
		}
	}
}

// stream returns the open stream id, or nil.
func (cc *Conn) stream(id uint32) *h2Stream {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.streams[id]
}

// process handles one frame; an error ends the connection.
func (cc *Conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return cc.processHeaders(f)
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
		return cc.cfg.peerErr(" pushed a stream, which this client disabled")
	}
	return nil // priorities and unknown frames
}

func (cc *Conn) processHeaders(f *http2.MetaHeadersFrame) error {
	s := cc.stream(f.StreamID)
	if s == nil {
		if f.StreamID >= cc.nextIDNow() {
			return cc.cfg.peerErr(" answered stream %d, never opened", f.StreamID)
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
		s.fail(cc.cfg.peerErr(" answered with status %q", status), http2.ErrCodeProtocol)
		return nil
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols || f.StreamEnded() {
			s.fail(cc.cfg.peerErr(" answered %d in HTTP/2", code), http2.ErrCodeProtocol)
		} else if s.n1xx++; s.n1xx > max1xx {
			s.fail(cc.cfg.peerErr(" sent too many informational answers"), http2.ErrCodeProtocol)
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
			s.fail(cc.cfg.peerErr(" answered with Content-Length %q", cl[0]), http2.ErrCodeProtocol)
			return nil
		}
		resp.ContentLength = int64(n)
	} else if len(cl) > 1 {
		s.fail(cc.cfg.peerErr(" answered with more than one Content-Length"), http2.ErrCodeProtocol)
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

// header builds an http.Header from fields. The canonical names of
// common answer headers are shared by every connection; a connection
// keeps those of the others it sees (a map made only then: a relay's idle
// agents keep none).
func (cc *Conn) header(fields []hpack.HeaderField) http.Header {
	h := make(http.Header, len(fields))
	for _, f := range fields {
		k, ok := answerHeaders[f.Name]
		if !ok {
			k, ok = cc.canon[f.Name]
		}
		if !ok {
			k = http.CanonicalHeaderKey(f.Name)
			if len(cc.canon) < 64 && len(f.Name) < 64 {
				if cc.canon == nil {
					cc.canon = make(map[string]string)
				}
				cc.canon[f.Name] = k
			}
		}
		h[k] = append(h[k], f.Value)
	}
	return h
}

// answerHeaders are the canonical names of common answer headers (the
// API server's among them), by their HTTP/2 names.
var answerHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept-Ranges", "Audit-Id", "Cache-Control", "Connection", "Content-Encoding",
		"Content-Length", "Content-Type", "Date", "Etag", "Expires", "Last-Modified", "Location", "Retry-After",
		"Server", "Set-Cookie", "Strict-Transport-Security", "Trailer", "Vary", "Warning", "Www-Authenticate",
		"X-Content-Type-Options", "X-Kubernetes-Pf-Flowschema-Uid", "X-Kubernetes-Pf-Prioritylevel-Uid",
		"X-Stream-Protocol-Version"} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

func (cc *Conn) nextIDNow() uint32 {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.nextID
}

// dataStream takes n bytes of DATA for stream id from the connection's
// window and returns the stream, nil if it has ended.
func (cc *Conn) dataStream(id uint32, n int32) (*h2Stream, error) {
	if n > cc.connRecv {
		return nil, cc.cfg.peerErr(" sent past the connection's window")
	}
	cc.connRecv -= n
	if cc.connRecv < connWindow/2 {
		add := connWindow - cc.connRecv
		cc.connRecv = connWindow
		if err := cc.writeFrame(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, uint32(add)) }); err != nil {
			return nil, err
		}
	}
	s := cc.stream(id)
	if s == nil && id >= cc.nextIDNow() {
		return nil, cc.cfg.peerErr(" sent data on stream %d, never opened", id)
	}
	return s, nil // nil: a stream the relay reset, whose window is back already
}

// connReader is what the read loop reads the connection through: the
// connection itself, with no buffer of its own. A TLS connection buffers
// a whole record already, so a bufio.Reader on top of it only copied each
// frame once more, and held 4 KiB for every connection while it waited
// for the next frame: a quarter of what an idle agent cost the relay
// (BENCHMARKS.md, "100,000 agents").
type connReader struct {
	net.Conn
	one [1]byte // ReadByte's, so that nothing is allocated per call
}

// ReadByte reads one byte.
func (r *connReader) ReadByte() (byte, error) {
	_, err := io.ReadFull(r.Conn, r.one[:])
	return r.one[0], err
}

// Discard skips n bytes.
func (r *connReader) Discard(n int) (int, error) {
	m, err := io.CopyN(io.Discard, r.Conn, int64(n))
	return int(m), err
}

// The read loop reads DATA frames itself instead of through the Framer,
// for two reasons. The Framer reads a frame's payload into a buffer of
// its own, which it keeps as large as the largest frame it has read: a
// connection that carried one download would hold 64 KiB for as long as
// it lives. And a payload's whole 16 KiB pieces can be read straight into
// pieces of the stream's buffer, a copy less; the rest of a frame is
// copied into it unless it nearly fills a piece, so that a stream's
// buffer wastes little more room than it would otherwise.
const dataPiece = 16 << 10

// readData reads a DATA frame, whose header is fh, and hands it to its
// stream. ioErr is a failed read; protoErr a frame that ends the
// connection.
func (cc *Conn) readData(fh http2.FrameHeader) (ioErr, protoErr error) {
	size := int(fh.Length)
	pad := 0
	if fh.Flags.Has(http2.FlagDataPadded) {
		if size == 0 {
			return nil, cc.cfg.peerErr(" sent a padded DATA frame with no pad length")
		}
		b, err := cc.br.ReadByte()
		if err != nil {
			return err, nil
		}
		pad, size = int(b), size-1
		if pad > size {
			return nil, cc.cfg.peerErr(" padded a DATA frame past its length")
		}
		size -= pad
	}
	const piece = dataPiece
	var pieces [][]byte
	const keepTail = piece - piece/16
	if size >= keepTail {
		pieces = make([][]byte, 0, (size+piece-1)/piece)
	}
	handed := false // to the stream, which puts them back
	defer func() {
		if !handed {
			for _, p := range pieces {
				putChunk(p)
			}
		}
	}()
	// Whole pieces, and a tail nearly a piece long (a frame of
	// DataFrameSize ends in one of 16,375 bytes), are read into pieces
	// of their own: the tail would have taken one all the same.
	for size >= keepTail {
		p := getChunk(piece)[:min(size, piece)]
		pieces = append(pieces, p)
		if _, err := io.ReadFull(cc.br, p); err != nil {
			return err, nil
		}
		size -= len(p)
	}
	var tail []byte
	if size > 0 {
		tail = getChunk(piece)[:size]
		defer putChunk(tail)
		if _, err := io.ReadFull(cc.br, tail); err != nil {
			return err, nil
		}
	}
	if _, err := cc.br.Discard(pad); err != nil {
		return err, nil
	}
	s, err := cc.dataStream(fh.StreamID, int32(fh.Length))
	if s != nil {
		handed = true
		s.data(pieces, tail, int32(fh.Length), fh.Flags.Has(http2.FlagDataEndStream))
	}
	return nil, err
}

func (cc *Conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		if !cc.settingsAckd {
			cc.settingsAckd = true
			cc.roundTrip.Sample(time.Since(cc.settingsSent))
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
		return cc.cfg.peerErr("'s settings: %w", err)
	}
	err = cc.writeFrame(func(fr *http2.Framer) error {
		if henc > 0 {
			cc.henc.SetMaxDynamicTableSizeLimit(henc - 1)
		}
		return fr.WriteSettingsAck()
	})
	cc.settingsDone()
	return err
}

func (cc *Conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	const maxWindow = 1<<31 - 1
	if f.StreamID == 0 {
		cc.connSend += int64(f.Increment)
		if cc.connSend > maxWindow {
			return cc.cfg.peerErr("'s connection window overflowed")
		}
	} else if s := cc.streams[f.StreamID]; s != nil {
		s.sendWin += int64(f.Increment)
		if s.sendWin > maxWindow {
			go s.fail(cc.cfg.peerErr("'s stream window overflowed"), http2.ErrCodeFlowControl)
		}
	}
	cc.flow.Broadcast()
	return nil
}

func (cc *Conn) processGoAway(f *http2.GoAwayFrame) {
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
		s.fail(fmt.Errorf("%w before serving this request", cc.cfg.sentinel(ErrGoingAway)), http2.ErrCodeCancel)
	}
	if idle {
		cc.fail(cc.cfg.sentinel(ErrGoingAway))
	}
}

// healthCheck pings a connection that has been silent for the ping
// interval, or for BusyPingAfter while it carries a stream, and ends it
// if the answer does not come within the matching timeout; then it sets
// itself for when the connection will next have been silent that long.
// A frame read only notes the time (lastRead): the check reads it.
//
// While it carries a stream the connection is pinged every BusyPingAfter
// even if frames keep coming: the agent judges a busy connection by what
// it reads, and a stream whose bytes all flow towards the relay would
// leave it nothing to read.
func (cc *Conn) healthCheck() {
	after, timeout, busy := cc.bounds()
	if wait := cc.untilPing(after, busy); wait > 0 {
		cc.health.Reset(wait)
		return
	}
	cc.lastPing.Store(time.Now().UnixNano())
	cc.ping(true, timeout)
	if cc.Alive() {
		after, _, busy = cc.bounds()
		cc.health.Reset(max(cc.untilPing(after, busy), 0))
	}
}

// untilPing is how long until the connection is due a ping: after
// silence, and while busy also after since the last ping.
func (cc *Conn) untilPing(after time.Duration, busy bool) time.Duration {
	wait := after - cc.silence()
	if busy {
		wait = min(wait, after-time.Duration(time.Now().UnixNano()-cc.lastPing.Load()))
	}
	return wait
}

// bounds are the connection's liveness bounds now: the busy ones while a
// stream is open.
func (cc *Conn) bounds() (after, timeout time.Duration, busy bool) {
	cc.mu.Lock()
	busy = len(cc.streams) > 0
	cc.mu.Unlock()
	if busy {
		return cc.cfg.busyAfter, cc.cfg.busyTimeout, true
	}
	return cc.cfg.pingInterval, cc.cfg.pingTimeout, false
}

// silence is how long ago the agent's last frame arrived.
func (cc *Conn) silence() time.Duration {
	return time.Duration(time.Now().UnixNano() - cc.lastRead.Load())
}

// LastRead is when the agent's last frame arrived on the connection.
func (cc *Conn) LastRead() time.Time { return time.Unix(0, cc.lastRead.Load()) }

// Probe pings the connection and reports whether the answer came within
// timeout; a late answer does not end the connection.
func (cc *Conn) Probe(timeout time.Duration) bool { return cc.ping(false, timeout) }

// ping sends a PING and takes its round trip as a sample of the
// connection's; failIfLate ends the connection if no answer comes within
// timeout. It reports whether the answer came in time.
func (cc *Conn) ping(failIfLate bool, timeout time.Duration) bool {
	var data [8]byte
	rand.Read(data[:])
	ch := make(chan struct{})
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return false
	}
	if cc.pings == nil {
		cc.pings = map[[8]byte]chan struct{}{}
	}
	cc.pings[data] = ch
	cc.mu.Unlock()
	start := time.Now()
	if cc.writeFrame(func(fr *http2.Framer) error { return fr.WritePing(false, data) }) != nil {
		return false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		if cc.Alive() {
			cc.roundTrip.Sample(time.Since(start))
			return true
		}
		return false
	case <-t.C:
		if failIfLate {
			cc.fail(cc.cfg.peerErr(" did not answer a ping"))
		}
		cc.mu.Lock()
		delete(cc.pings, data)
		cc.mu.Unlock()
		return false
	}
}

// Alive reports whether the connection has not ended.
func (cc *Conn) Alive() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err == nil
}

// rtt is the connection's round-trip time, 0 until measured; a PING
// measures it again when it is older than h2frame.RoundTripMaxAge.
func (cc *Conn) rtt(now time.Time) time.Duration {
	if cc.cfg.fixedRTT > 0 {
		return cc.cfg.fixedRTT
	}
	d, stale := cc.roundTrip.Get(now)
	if stale && cc.rttPinging.CompareAndSwap(false, true) {
		go func() {
			defer cc.rttPinging.Store(false)
			cc.ping(false, cc.cfg.pingTimeout)
		}()
	}
	return d
}
