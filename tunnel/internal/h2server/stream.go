//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its Framer and hpack are what the agent's server is written on, and on Go 1.26 it is not a wrapper of net/http. See tunnel/PROTOCOL.md.

package h2server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/clusterconnect/clusterconnect/internal/h2frame"
)

// stream is one request and its answer. Its fields are under the
// connection's mu, but for the answer's, which are its handler's.
type stream struct {
	c       *Conn
	id      uint32
	sendWin int64 // what the client lets the answer send
	recvWin int64 // what the client may still send of the body
	// recvDone: the client ended the body (END_STREAM), or the server
	// reset the stream; its DATA is the connection's window only.
	recvDone bool
	// pendingUpdate is body read and not yet given back to the client.
	pendingUpdate int64
	// The body's window, and how it grows (see growLocked): target is what
	// the client may have sent and the handler not read (beyond
	// MaxUploadBufferPerStream, lent by the connection's budget); read
	// counts what the handler read, and the epoch is the stretch its pace
	// is judged over.
	target          int64
	read, epochRead int64
	epochStart      time.Time
	body            *body
	cancel          context.CancelFunc
	err             error // set when the stream was reset or the connection closed
}

// fail ends s with err: its handler's context is canceled, its body
// reads and answer's writes fail. Called under c.mu.
func (s *stream) fail(err error) {
	if s.err == nil {
		s.err = err
	}
	s.recvDone = true
	s.body.fail(err)
	s.cancel()
	s.c.cond.Broadcast()
}

// headers opens a stream for a request's header block, or ends a body
// with trailers.
func (c *Conn) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		// Trailers: they must end the body.
		c.mu.Unlock()
		if !f.StreamEnded() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.mu.Lock()
		if !s.recvDone {
			s.recvDone = true
			s.body.endWithTrailers(f.RegularFields())
		}
		c.mu.Unlock()
		return nil
	}
	if id%2 == 0 {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if id <= c.maxID {
		// Trailers of a stream the server has answered and reset, sent
		// before the client knew: decoded, and dropped.
		c.mu.Unlock()
		return nil
	}
	c.maxID = id
	if c.goingAway {
		c.mu.Unlock()
		c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) }, true)
		return nil
	}
	// Handlers of streams the client reset still run until they see
	// their context end: they count too, so that opening and resetting
	// streams at once cannot start handlers without bound.
	if uint32(len(c.streams)) >= c.cfg.MaxConcurrentStreams || c.handlers >= 2*int(c.cfg.MaxConcurrentStreams) {
		c.mu.Unlock()
		c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) }, true)
		return nil
	}
	ctx, cancel := context.WithCancel(c.ctx)
	win := int64(c.cfg.MaxUploadBufferPerStream)
	s := &stream{c: c, id: id, sendWin: c.initWin, recvWin: win, target: win, epochStart: time.Now(), cancel: cancel, recvDone: f.StreamEnded()}
	s.body = &body{s: s}
	s.body.cond.L = &s.body.mu
	c.streams[id] = s
	c.mu.Unlock()

	if f.Truncated {
		// Over MaxHeaderBytes: answered, as x/net's server answers it.
		c.start(s, nil, http.StatusRequestHeaderFieldsTooLarge)
		return nil
	}
	req, err := c.request(ctx, f, s)
	if err != nil {
		c.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}
	c.start(s, req, 0)
	return nil
}

// request makes the http.Request of a header block.
func (c *Conn) request(ctx context.Context, f *http2.MetaHeadersFrame, s *stream) (*http.Request, error) {
	method, path, authority, scheme := f.PseudoValue("method"), f.PseudoValue("path"), f.PseudoValue("authority"), f.PseudoValue("scheme")
	if f.PseudoValue("protocol") != "" || method == "" {
		return nil, errBadRequest
	}
	connect := method == http.MethodConnect
	if connect != (path == "") || connect != (scheme == "") || (connect && authority == "") {
		return nil, errBadRequest
	}
	hdr := make(http.Header, len(f.RegularFields()))
	for _, hf := range f.RegularFields() {
		k := http.CanonicalHeaderKey(hf.Name)
		if k == "Cookie" && len(hdr[k]) > 0 {
			hdr[k][0] += "; " + hf.Value
			continue
		}
		hdr[k] = append(hdr[k], hf.Value)
	}
	req := &http.Request{
		Method: method, Proto: "HTTP/2.0", ProtoMajor: 2, Header: hdr, Host: authority,
		RemoteAddr: c.conn.RemoteAddr().String(), RequestURI: path,
	}
	if connect {
		req.URL = &url.URL{Host: authority}
		req.RequestURI = authority
	} else {
		u, err := url.ParseRequestURI(path)
		if err != nil {
			return nil, errBadRequest
		}
		req.URL = u
	}
	for _, v := range hdr["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			switch k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k {
			case "", "Transfer-Encoding", "Trailer", "Content-Length":
			default:
				if req.Trailer == nil {
					req.Trailer = http.Header{}
				}
				req.Trailer[k] = nil
			}
		}
	}
	delete(hdr, "Trailer")
	s.body.trailer = req.Trailer
	if f.StreamEnded() {
		req.Body = http.NoBody
	} else {
		req.Body = s.body
		req.ContentLength = -1
		if v := hdr["Content-Length"]; len(v) == 1 {
			n, err := strconv.ParseInt(v[0], 10, 64)
			if err != nil || n < 0 {
				return nil, errBadRequest
			}
			req.ContentLength = n
		}
	}
	if req.Host == "" {
		req.Host = hdr.Get("Host")
	}
	return req.WithContext(ctx), nil
}

var errBadRequest = errors.New("h2server: malformed request")

// start starts serve on a goroutine of its own, counted in c.handlers.
func (c *Conn) start(s *stream, req *http.Request, status int) {
	c.mu.Lock()
	c.handlers++
	c.mu.Unlock()
	go c.serve(s, req, status)
}

// serve runs the handler for s, or answers status when it is set, then
// ends the answer: END_STREAM, or RST_STREAM if the handler panicked.
func (c *Conn) serve(s *stream, req *http.Request, status int) {
	w := &responseWriter{s: s, header: http.Header{}, head: req != nil && req.Method == http.MethodHead}
	defer func() {
		c.mu.Lock()
		c.handlers--
		c.mu.Unlock()
	}()
	defer func() {
		if v := recover(); v != nil {
			// http.ErrAbortHandler and any other panic: the answer is
			// not whole, and the client must not take it for whole.
			c.resetStream(s.id, http2.ErrCodeInternal)
			s.body.close()
			return
		}
		w.finish()
		s.body.close()
		c.mu.Lock()
		early := !s.recvDone
		if early {
			// The answer is whole before the request's body: the
			// client may stop sending it (RFC 9113 §8.1).
			s.fail(errStreamClosed)
		}
		c.removeLocked(s)
		c.mu.Unlock()
		s.cancel()
		if early {
			c.write(func() error { return c.fr.WriteRSTStream(s.id, http2.ErrCodeNo) }, true)
		}
	}()
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	c.h.ServeHTTP(w, req)
}

// body is a request's body as the handler reads it.
//
// What the client sends waits in pooled chunks of bodyChunk bytes until
// the handler reads it: one growing buffer, let go once read, was
// reallocated and copied whole as an upload's bytes came in faster than
// the handler took them, and the collector's work to free it cost the
// agent as much as the upload's TLS (BENCHMARKS.md, "Uploads").
type body struct {
	s       *stream
	mu      sync.Mutex
	cond    sync.Cond
	chunks  []*[]byte // unread: chunks[head:], from off in the first
	head    int
	off     int
	unread  int
	end     bool        // the client ended the body
	trailer http.Header // the request's Trailer
	err     error       // the stream failed
	closed  bool        // the handler is done with it
}

// put adds p to the body; end marks its end. Called by the reader
// under the connection's mu; it reports whether p was dropped (the
// handler is done with the body), whose window the caller gives back.
func (b *body) put(p []byte, end bool) (dropped bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if end {
		b.end = true
	}
	b.cond.Broadcast()
	if b.closed || b.err != nil {
		return len(p) > 0
	}
	b.unread += len(p)
	if b.head >= 16 && b.head >= len(b.chunks)/2 {
		// A handler that never quite catches up: the slots of chunks
		// read go, so that the slice stays the size of what is unread.
		k := copy(b.chunks, b.chunks[b.head:])
		clear(b.chunks[k:])
		b.chunks, b.head = b.chunks[:k], 0
	}
	for len(p) > 0 {
		if k := len(b.chunks); k == 0 || len(*b.chunks[k-1]) == bodyChunk {
			b.chunks = append(b.chunks, bodyChunks.Get().(*[]byte))
		}
		last := b.chunks[len(b.chunks)-1]
		n := min(len(p), bodyChunk-len(*last))
		*last = append(*last, p[:n]...)
		p = p[n:]
	}
	return false
}

// bodyChunk is the size of the pieces a body waits in: a frame's worth
// of HTTP/2's default.
const bodyChunk = 16 << 10

var bodyChunks = sync.Pool{New: func() any { b := make([]byte, 0, bodyChunk); return &b }}

func putBodyChunk(b *[]byte) {
	*b = (*b)[:0]
	bodyChunks.Put(b)
}

// take copies what is unread into p, giving back the chunks it empties;
// under b.mu.
func (b *body) take(p []byte) int {
	n := 0
	for n < len(p) && b.unread > 0 {
		first := b.chunks[b.head]
		k := copy(p[n:], (*first)[b.off:])
		n, b.off, b.unread = n+k, b.off+k, b.unread-k
		if b.off == len(*first) {
			// Read to its end: every chunk but the last is full, and
			// the last goes once all that came is read.
			putBodyChunk(first)
			b.chunks[b.head] = nil
			b.head, b.off = b.head+1, 0
		}
	}
	if b.head == len(b.chunks) {
		b.chunks, b.head = b.chunks[:0], 0
	}
	return n
}

// release gives the unread chunks back; under b.mu.
func (b *body) release() {
	for i := b.head; i < len(b.chunks); i++ {
		putBodyChunk(b.chunks[i])
		b.chunks[i] = nil
	}
	b.chunks, b.head, b.off, b.unread = b.chunks[:0], 0, 0, 0
}

// endWithTrailers ends the body with the request's trailers, which go
// into its Trailer before its reader sees the end. Called by the reader.
func (b *body) endWithTrailers(fields []hpack.HeaderField) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range fields {
		if b.trailer == nil {
			break // none were announced
		}
		k := http.CanonicalHeaderKey(f.Name)
		if httpguts.ValidTrailerHeader(k) {
			b.trailer[k] = append(b.trailer[k], f.Value)
		}
	}
	b.end = true
	b.cond.Broadcast()
}

func (b *body) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// close is the handler done with the body: what is buffered is dropped.
func (b *body) close() {
	b.mu.Lock()
	b.closed = true
	n := b.unread
	b.release()
	b.chunks = nil
	b.cond.Broadcast()
	b.mu.Unlock()
	if n > 0 {
		b.s.returnWindow(n, false)
	}
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	for b.unread == 0 && !b.end && b.err == nil && !b.closed {
		b.cond.Wait()
	}
	if b.unread == 0 {
		err := b.err
		switch {
		case b.closed:
			err = http.ErrBodyReadAfterClose
		case err == nil:
			err = io.EOF
		}
		b.mu.Unlock()
		return 0, err
	}
	n := b.take(p)
	b.mu.Unlock()
	b.s.returnWindow(n, true)
	return n, nil
}

// Close is the handler's Close of the request body.
func (b *body) Close() error {
	b.close()
	return nil
}

// returnWindow gives the client back n bytes of the stream's and the
// connection's windows, each once a quarter of its window has gathered;
// read: the handler read them (rather than they were dropped), which may
// grow the stream's window.
func (s *stream) returnWindow(n int, read bool) {
	c := s.c
	c.mu.Lock()
	var streamUpdate int64
	if !s.recvDone {
		s.pendingUpdate += int64(n)
		if read {
			s.read += int64(n)
		}
		if s.pendingUpdate >= s.target/4 {
			streamUpdate = s.pendingUpdate + s.growLocked()
			s.pendingUpdate = 0
			s.recvWin += streamUpdate
		}
	}
	c.recvUnsent += int64(n)
	connUpdate := c.takeConnUpdateLocked()
	c.mu.Unlock()
	if streamUpdate == 0 && connUpdate == 0 {
		return
	}
	c.write(func() error {
		if connUpdate > 0 {
			if err := c.fr.WriteWindowUpdate(0, uint32(connUpdate)); err != nil {
				return err
			}
		}
		if streamUpdate > 0 {
			return c.fr.WriteWindowUpdate(s.id, uint32(streamUpdate))
		}
		return nil
	}, true)
}

// growLocked grows the body's window while its handler keeps up, by the
// rule the relay grows an answer's by (h2frame.WindowHoldsBack: the
// handler read half the window or more in less than two round trips, so
// the window is what holds the upload back): it doubles, up to
// MaxUploadWindowPerStream, out of the connection's budget of half its
// window, as h2frame.GrowthStep shares it: up to an eighth of the budget
// from whatever is left, past it only while half the budget stays free.
// A handler that stops, or reads slower than the window lets bytes come,
// never grows it. It returns the growth, which the caller gives the
// client with the window it returns; the budget has it back when the
// stream is forgotten. Under c.mu.
func (s *stream) growLocked() int64 {
	c := s.c
	limit := int64(c.cfg.MaxUploadWindowPerStream)
	inEpoch := s.read - s.epochRead
	if s.target >= limit || inEpoch <= s.target/2 {
		return 0
	}
	now := time.Now()
	var got int64
	if h2frame.WindowHoldsBack(inEpoch, s.target, now.Sub(s.epochStart), c.rtt(now)) {
		step, keep := h2frame.GrowthStep(s.target, limit, c.growShare, c.growBudget)
		got = max(min(step, c.growAvail-keep), 0)
		c.growAvail -= got
		s.target += got
	}
	s.epochStart, s.epochRead = now, s.read
	return got
}

// responseWriter is the handler's http.ResponseWriter.
type responseWriter struct {
	s            *stream
	header       http.Header
	head         bool // a HEAD request: no body is sent
	status       int
	wroteHeader  bool // WriteHeader for the final answer was called
	sentHeader   bool // its HEADERS went out
	noBody       bool // a status that has none
	buf          []byte
	declared     []string // trailer names the Trailer header announced
	declaredDone bool
	finished     bool
	err          error
}

// holdBody is how much of an answer is kept before its HEADERS go, so
// that a small answer's headers and body leave in one write with its
// length.
const holdBody = 4 << 10

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader || w.finished {
		return
	}
	if code < 100 || code > 999 {
		panic("h2server: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// An informational answer goes at once; the final one follows.
		w.sendInformational(code)
		return
	}
	w.wroteHeader = true
	w.status = code
	w.noBody = code == http.StatusNoContent || code == http.StatusNotModified
}

func (w *responseWriter) sendInformational(code int) {
	w.err = w.s.c.writeBlock(w.s.id, strconv.Itoa(code), w.header, nil, false, true)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.finished {
		return 0, http.ErrHandlerTimeout
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.head || w.noBody {
		if w.noBody {
			return 0, http.ErrBodyNotAllowed
		}
		return len(p), nil
	}
	if len(w.buf)+len(p) <= holdBody {
		// Small writes gather until a Flush, the handler's end, or a
		// buffer's worth, as HTTP/1.1's and x/net's servers gather them.
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if err := w.sendHeld(p); err != nil {
		return 0, err
	}
	if err := w.sendData(p, false, true); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteString is Write for io.StringWriter callers.
func (w *responseWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

// FlushError sends the headers and what is written, and flushes the
// connection.
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if w.finished {
		return http.ErrHandlerTimeout
	}
	if err := w.sendHeld(nil); err != nil {
		return err
	}
	if err := w.s.c.flush(); err != nil {
		w.err = err
		return err
	}
	return w.s.errLoad()
}

// sendHeld sends the headers, if they have not gone, and the body
// gathered so far; first is the body's next bytes, for the headers'
// Content-Type.
func (w *responseWriter) sendHeld(first []byte) error {
	if err := w.sendHeader(false, first); err != nil {
		return err
	}
	if len(w.buf) > 0 {
		if err := w.sendData(w.buf, false, false); err != nil {
			return err
		}
		w.buf = w.buf[:0]
	}
	return nil
}

// Flush is FlushError for callers that assert http.Flusher.
func (w *responseWriter) Flush() { w.FlushError() }

func (s *stream) errLoad() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.err
}

// finish ends the answer after the handler returned.
func (w *responseWriter) finish() {
	if w.finished {
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.declare()
	trailers := w.trailers()
	if !w.sentHeader {
		if !w.head && !w.noBody && w.header.Get("Content-Length") == "" && len(trailers) == 0 {
			w.header.Set("Content-Length", strconv.Itoa(len(w.buf)))
		}
		if len(w.buf) == 0 && len(trailers) == 0 {
			w.finished = true
			if w.sendHeader(true, nil) == nil {
				w.err = w.s.c.flush()
			}
			return
		}
		w.sendHeader(false, nil)
	}
	b := w.buf
	w.buf = nil
	w.finished = true
	if len(trailers) == 0 {
		w.sendData(b, true, true)
		return
	}
	if len(b) > 0 && w.sendData(b, false, false) != nil {
		return
	}
	w.err = w.s.c.writeBlock(w.s.id, "", trailers, nil, true, true)
}

// declare notes the trailers the Trailer header announces, once, when
// the headers go or the handler is done.
func (w *responseWriter) declare() {
	if w.declaredDone {
		return
	}
	w.declaredDone = true
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				w.declared = append(w.declared, k)
			}
		}
	}
}

// trailers are the answer's trailers: the values of names declared in a
// Trailer header before the headers went, and http.TrailerPrefix keys.
func (w *responseWriter) trailers() http.Header {
	var t http.Header
	for _, k := range w.declared {
		if vs, ok := w.header[k]; ok {
			if t == nil {
				t = http.Header{}
			}
			t[k] = vs
		}
	}
	for k, vs := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if t == nil {
				t = http.Header{}
			}
			t[http.CanonicalHeaderKey(name)] = vs
		}
	}
	return t
}

// sendHeader writes the answer's HEADERS, once; the body's first bytes
// are in w.buf, or else in first.
func (w *responseWriter) sendHeader(end bool, first []byte) error {
	if w.sentHeader {
		return w.err
	}
	w.sentHeader = true
	if _, ok := w.header["Content-Type"]; !ok && !w.noBody && !w.head {
		if len(w.buf) > 0 {
			first = w.buf
		}
		if len(first) > 0 {
			w.header.Set("Content-Type", http.DetectContentType(first))
		}
	}
	w.declare()
	if err := w.s.errLoad(); err != nil {
		// Reset by the client, or the connection is gone: nothing goes.
		w.err = err
		return err
	}
	err := w.s.c.writeBlock(w.s.id, strconv.Itoa(w.status), w.header, func(k string) bool {
		return k == "Trailer" || strings.HasPrefix(k, http.TrailerPrefix) || slices.Contains(w.declared, k)
	}, end, false)
	if err != nil {
		w.err = err
	}
	return err
}

// sendData writes p as DATA frames within the windows the client gives;
// end sets END_STREAM on the last, flush flushes the connection after.
// It waits for window while the stream lives.
func (w *responseWriter) sendData(p []byte, end, flush bool) error {
	s := w.s
	c := s.c
	for len(p) > 0 || end {
		c.mu.Lock()
		for len(p) > 0 && (c.sendWin <= 0 || s.sendWin <= 0) && s.err == nil && !c.closed {
			c.mu.Unlock()
			// What is written waits in the buffer: send it, so that the
			// client can read it and give window back.
			if err := c.flush(); err != nil {
				w.err = err
				return err
			}
			c.mu.Lock()
			for (c.sendWin <= 0 || s.sendWin <= 0) && s.err == nil && !c.closed {
				c.cond.Wait()
			}
		}
		if s.err != nil || c.closed {
			err := s.err
			if err == nil {
				err = errConnClosed
			}
			c.mu.Unlock()
			w.err = err
			return err
		}
		n := max(0, min(int64(len(p)), c.sendWin, s.sendWin, int64(c.peerFrame)))
		c.sendWin -= n
		s.sendWin -= n
		c.mu.Unlock()
		last := end && int(n) == len(p)
		err := c.write(func() error { return c.fr.WriteData(s.id, last, p[:n]) }, last || flush)
		if err != nil {
			w.err = err
			return err
		}
		p = p[n:]
		if last {
			return nil
		}
	}
	return nil
}

func (c *Conn) peerFrameLoad() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerFrame
}

// writeBlock writes a header block for stream id: :status if status is
// set, then h's fields but those skip names (skip may be nil); end sets
// END_STREAM, flush flushes the connection after.
func (c *Conn) writeBlock(id uint32, status string, h http.Header, skip func(string) bool, end, flush bool) error {
	frame := c.peerFrameLoad()
	return c.write(func() error {
		c.hbuf.b = c.hbuf.b[:0]
		if status != "" {
			c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
		}
		for k, vs := range h {
			if skip != nil && skip(k) {
				continue
			}
			for _, v := range vs {
				c.encodeField(k, v)
			}
		}
		return h2frame.WriteHeaderBlock(c.fr, id, end, frame, c.hbuf.b)
	}, flush)
}

// encodeField adds a header of the answer, lower-cased, leaving out what
// HTTP/2 does not carry. Called under wmu.
func (c *Conn) encodeField(k, v string) {
	name := strings.ToLower(k)
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return
	}
	if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(v) {
		return
	}
	// An ID new in every answer would push the fields that repeat out
	// of the client's table.
	c.henc.WriteField(hpack.HeaderField{Name: name, Value: v, Sensitive: name == "audit-id"})
}
