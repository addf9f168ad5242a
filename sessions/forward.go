package sessions

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// A port-forward is SPDY/3.1 (bare, or inside WebSocket binary messages
// from kubectl 1.31 on) in which kubectl opens two streams for each local
// connection it forwards: an error stream, on which it expects a message
// if forwarding fails, and a data stream. kubectl prints what arrives on
// an error stream ("an error occurred forwarding 8080 -> 80: …") and then
// ends the port-forward. forwardTracker follows both directions far
// enough to say which of those streams the cluster has not finished, so
// that a port-forward ended on purpose or lost for good can finish them
// with its words.
type forwardTracker struct {
	serverWS, clientWS *wsPayloads // nil over bare SPDY
	server, client     spdyFrames

	// broken: something did not parse or went past a bound; nothing is
	// followed any more and the port-forward ends without words.
	broken atomic.Bool
	mu     sync.Mutex
	// streams are the client's streams the server has not finished: true
	// for an error stream, false for a data stream.
	streams map[uint32]bool

	// The client's header blocks, compressed as one zlib stream for the
	// whole connection (SPDY/3 §2.6.10.1), and its reader, made at the
	// first block. Only the client's side is decompressed: the server's
	// headers say nothing needed here.
	compressed bytes.Buffer
	inflate    io.ReadCloser
	field      []byte
}

// Bounds on what a client can make the tracker hold; past them it stops
// following the port-forward (kubectl opens 2 streams per forwarded
// connection, with three small headers each).
const (
	maxForwardStreams = 1024
	maxControlFrame   = 16 << 10
	maxHeaderPairs    = 32
	maxHeaderField    = 4 << 10
)

func newForwardTracker(websocket bool) *forwardTracker {
	t := &forwardTracker{streams: make(map[uint32]bool)}
	if websocket {
		t.serverWS, t.clientWS = &wsPayloads{}, &wsPayloads{}
	}
	return t
}

func (t *forwardTracker) fromServer(p []byte) {
	if t.broken.Load() {
		return
	}
	if t.serverWS != nil {
		t.serverWS.feed(p, t.serverSPDY)
		return
	}
	t.serverSPDY(p, nil)
}

func (t *forwardTracker) fromClient(p []byte) {
	if t.broken.Load() {
		// What only the client's side uses is let go on its side, once.
		if t.inflate != nil || t.clientWS != nil || t.compressed.Cap() > 0 {
			t.compressed, t.inflate, t.field, t.clientWS = bytes.Buffer{}, nil, nil, nil
		}
		return
	}
	if t.clientWS != nil {
		t.clientWS.feed(p, t.clientSPDY)
		return
	}
	t.clientSPDY(p, nil)
}

func (t *forwardTracker) serverSPDY(p []byte, m *wsMask) {
	if !t.server.feed(p, m, t.serverFrame) {
		t.stop()
	}
}

func (t *forwardTracker) clientSPDY(p []byte, m *wsMask) {
	if !t.client.feed(p, m, t.clientFrame) {
		t.stop()
	}
}

// SPDY/3.1 frames (draft-mbelshe-httpbis-spdy-00 §2.2).
const (
	spdyFlagFin      = 0x01
	spdySynStream    = 1
	spdySynReply     = 2
	spdyRstStream    = 3
	spdyHeaders      = 8
	spdyStreamIDMask = 0x7fffffff
)

// serverFrame notes a stream the server finished: a data frame, reply or
// headers with FIN, or a reset.
func (t *forwardTracker) serverFrame(head [8]byte, payload []byte) {
	fin := head[4]&spdyFlagFin != 0
	if head[0]&0x80 == 0 {
		if fin {
			t.finished(binary.BigEndian.Uint32(head[:]) & spdyStreamIDMask)
		}
		return
	}
	switch binary.BigEndian.Uint16(head[2:]) {
	case spdySynReply, spdyHeaders:
		if !fin {
			return
		}
		fallthrough
	case spdyRstStream:
		if len(payload) >= 4 {
			t.finished(binary.BigEndian.Uint32(payload) & spdyStreamIDMask)
		}
	}
}

// clientFrame notes the streams the client opens for a forwarded
// connection, and those it resets.
func (t *forwardTracker) clientFrame(head [8]byte, payload []byte) {
	if head[0]&0x80 == 0 {
		return // data
	}
	switch binary.BigEndian.Uint16(head[2:]) {
	case spdySynStream:
		if len(payload) < 10 {
			t.stop()
			return
		}
		id := binary.BigEndian.Uint32(payload) & spdyStreamIDMask
		kind, ok := t.streamType(payload[10:])
		if !ok {
			t.stop()
			return
		}
		if kind == "error" || kind == "data" {
			t.opened(id, kind == "error")
		}
	case spdyHeaders:
		// Its block is read only to keep the zlib stream in step.
		if len(payload) < 4 {
			t.stop()
			return
		}
		if _, ok := t.streamType(payload[4:]); !ok {
			t.stop()
		}
	case spdyRstStream:
		if len(payload) >= 4 {
			t.finished(binary.BigEndian.Uint32(payload) & spdyStreamIDMask)
		}
	}
}

// streamType decompresses the next header block and returns its
// "streamtype" header (client-go's portforward names each stream's role
// so), or ok false if the block does not parse within the bounds.
func (t *forwardTracker) streamType(block []byte) (kind string, ok bool) {
	t.compressed.Write(block)
	if t.inflate == nil {
		r, err := zlib.NewReaderDict(&t.compressed, spdyDictionary())
		if err != nil {
			return "", false
		}
		t.inflate = r
	}
	n, ok := t.readUint32()
	if !ok || n > maxHeaderPairs {
		return "", false
	}
	for range n {
		name, ok := t.readField()
		if !ok {
			return "", false
		}
		isType := string(name) == "streamtype"
		value, ok := t.readField()
		if !ok {
			return "", false
		}
		if isType {
			kind = string(value)
		}
	}
	return kind, true
}

func (t *forwardTracker) readUint32() (uint32, bool) {
	var b [4]byte
	if _, err := io.ReadFull(t.inflate, b[:]); err != nil {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[:]), true
}

// readField reads a length and that many bytes into t.field.
func (t *forwardTracker) readField() ([]byte, bool) {
	n, ok := t.readUint32()
	if !ok || n > maxHeaderField {
		return nil, false
	}
	t.field = slices.Grow(t.field[:0], int(n))[:n]
	if _, err := io.ReadFull(t.inflate, t.field); err != nil {
		return nil, false
	}
	return t.field, true
}

func (t *forwardTracker) opened(id uint32, errorStream bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken.Load() {
		return
	}
	if len(t.streams) >= maxForwardStreams {
		t.stopLocked()
		return
	}
	t.streams[id] = errorStream
}

func (t *forwardTracker) finished(id uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.streams, id)
}

func (t *forwardTracker) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopLocked()
}

func (t *forwardTracker) stopLocked() {
	t.broken.Store(true)
	t.streams = nil
}

func (t *forwardTracker) cutAt() uint64 { return 0 }

// heldHead and dropHead: a port-forward's bytes are passed on as they
// come.
func (t *forwardTracker) heldHead() int { return 0 }

func (t *forwardTracker) dropHead() {}

func (t *forwardTracker) boundary() bool {
	return t.server.boundary() && (t.serverWS == nil || t.serverWS.boundary())
}

// final is what ends the forwarded connections the server has not
// finished: msg (kubectl prints it as it stands) and FIN on each error
// stream, FIN on each data stream; nil where nothing can be said (no such
// stream, the server's bytes end inside a frame, or the tracker stopped).
func (t *forwardTracker) final(_ int, msg string) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken.Load() || !t.boundary() || len(t.streams) == 0 {
		return nil
	}
	ids := make([]uint32, 0, len(t.streams))
	for id := range t.streams {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var b []byte
	for _, id := range ids {
		if t.streams[id] {
			b = spdyDataFrame(b, id, spdyFlagFin, []byte(msg))
		}
	}
	for _, id := range ids {
		if !t.streams[id] {
			b = spdyDataFrame(b, id, spdyFlagFin, nil)
		}
	}
	if t.serverWS == nil {
		return b
	}
	opcode := byte(0x2)
	if t.serverWS.fragmented {
		opcode = 0x0 // the end of the message the server began
	}
	return wsFrame(nil, opcode, b)
}

func spdyDataFrame(b []byte, stream uint32, flags byte, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, stream&spdyStreamIDMask)
	b = append(b, flags, byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload)))
	return append(b, payload...)
}

// spdyFrames splits one direction of a SPDY/3.1 connection into frames:
// each 8-byte header is handed on with the frame's payload for a control
// frame (at most maxControlFrame bytes), without it for a data frame,
// whose payload is skipped.
type spdyFrames struct {
	head    [8]byte
	n       int    // bytes of head read
	left    int    // payload bytes left in the frame
	control []byte // a control frame's payload so far
}

// feed takes the next bytes, masked with m if m is not nil (only the
// bytes it reads are unmasked: a data frame's payload is skipped as it
// is), and reports false if a control frame is too large to follow.
func (s *spdyFrames) feed(p []byte, m *wsMask, frame func(head [8]byte, payload []byte)) bool {
	for len(p) > 0 {
		if s.n < len(s.head) {
			k := copy(s.head[s.n:], p)
			m.unmask(s.head[s.n : s.n+k])
			s.n += k
			p = p[k:]
			if s.n < len(s.head) {
				return true
			}
			s.left = int(s.head[5])<<16 | int(s.head[6])<<8 | int(s.head[7])
			if s.head[0]&0x80 == 0 {
				frame(s.head, nil)
			} else if s.left > maxControlFrame {
				return false
			}
		}
		k := min(len(p), s.left)
		if s.head[0]&0x80 != 0 {
			s.control = append(s.control, p[:k]...)
			m.unmask(s.control[len(s.control)-k:])
		} else {
			m.skip(k)
		}
		s.left -= k
		p = p[k:]
		if s.left == 0 {
			if s.head[0]&0x80 != 0 {
				frame(s.head, s.control)
				s.control = s.control[:0]
			}
			s.n = 0
		}
	}
	return true
}

// boundary reports whether the bytes seen so far end with a frame.
func (s *spdyFrames) boundary() bool { return s.n == 0 }

// wsPayloads takes one direction of a WebSocket connection and hands on
// the payloads of its data frames, with their mask, if any.
type wsPayloads struct {
	head       []byte
	left       uint64
	data       bool // the frame in progress carries data, not control
	mask       wsMask
	fragmented bool // the last data frame did not end its message
}

func (w *wsPayloads) feed(p []byte, out func(p []byte, m *wsMask)) {
	for len(p) > 0 {
		if w.left == 0 {
			w.head = append(w.head, p[0])
			p = p[1:]
			if need := wsHeaderLen(w.head); need == 0 || len(w.head) < need {
				continue
			}
			w.left = wsPayloadLen(w.head)
			opcode := w.head[0] & 0x0f
			w.data = opcode < 0x8
			if w.data {
				w.fragmented = w.head[0]&0x80 == 0
			}
			w.mask = wsMask{}
			if w.head[1]&0x80 != 0 {
				w.mask.masked = true
				copy(w.mask.key[:], w.head[len(w.head)-4:])
			}
			w.head = w.head[:0]
			continue
		}
		k := min(uint64(len(p)), w.left)
		chunk := p[:k]
		p = p[k:]
		w.left -= k
		if w.data {
			m := &w.mask
			if !m.masked {
				m = nil
			}
			out(chunk, m)
		} else {
			w.mask.skip(len(chunk))
		}
	}
}

// boundary reports whether the bytes seen so far end with a frame.
func (w *wsPayloads) boundary() bool { return w.left == 0 && len(w.head) == 0 }

// wsMask is a client's frame's mask (RFC 6455 §5.3) and how far into its
// payload the bytes handed on are. Its methods do nothing on a nil mask.
type wsMask struct {
	masked bool
	key    [4]byte
	at     int
}

// unmask unmasks the next len(b) bytes of the payload, in place: b is a
// copy the reader made.
func (m *wsMask) unmask(b []byte) {
	if m == nil {
		return
	}
	for i := range b {
		b[i] ^= m.key[(m.at+i)%4]
	}
	m.skip(len(b))
}

// skip passes over the next n bytes of the payload.
func (m *wsMask) skip(n int) {
	if m != nil {
		m.at = (m.at + n) % 4
	}
}

// spdyDictionary is the dictionary SPDY/3 compresses header blocks with
// (§2.6.10.1): 65 words, each after its length in four bytes, then the
// rest as it stands.
var spdyDictionary = sync.OnceValue(func() []byte {
	var b []byte
	for _, w := range strings.Fields(spdyDictionaryWords) {
		if w == "200_OK" {
			w = "200 OK"
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(w)))
		b = append(b, w...)
	}
	return append(b, spdyDictionaryRest...)
})

const spdyDictionaryWords = `options head post put delete trace accept accept-charset
accept-encoding accept-language accept-ranges age allow authorization
cache-control connection content-base content-encoding content-language
content-length content-location content-md5 content-range content-type date
etag expect expires from host if-match if-modified-since if-none-match
if-range if-unmodified-since last-modified location max-forwards pragma
proxy-authenticate proxy-authorization range referer retry-after server te
trailer transfer-encoding upgrade user-agent vary via warning
www-authenticate method get status 200_OK version HTTP/1.1 url public
set-cookie keep-alive origin`

const spdyDictionaryRest = "100101201202205206300302303304305306307402405406407408409410411412413414" +
	"415416417502504505203 Non-Authoritative Information204 No Content" +
	"301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden" +
	"404 Not Found500 Internal Server Error501 Not Implemented" +
	"503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec" +
	" 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html," +
	"image/png,image/jpg,image/gif,application/xml,application/xhtml+xml," +
	"text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch" +
	"charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
