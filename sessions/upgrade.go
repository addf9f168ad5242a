package sessions

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EndInWords wraps conn, the connection of an exec, attach or
// port-forward that was upgraded (resp is its 101), so that if reading it
// fails — the connection under it was lost for good — the client reads a
// last message in its own protocol, then the end.
//
// An exec or attach ends with a Status on the session's error stream,
// over WebSocket (the channel protocols v4 and v5) or SPDY: kubectl
// prints "error: " and the message, and exits 1. Without it, kubectl over
// SPDY exits 0 with nothing on stderr, as if the command had succeeded,
// and over WebSocket prints a close code.
//
// A port-forward (SPDY/3.1, bare or inside WebSocket) ends each forwarded
// connection the cluster has not finished with the message on its error
// stream: kubectl prints "an error occurred forwarding …: " and the
// message, then "error: lost connection to pod", and exits 1. The
// connection is held open for a moment after the message (until the
// client stops sending, at most PortForwardLinger), so that kubectl reads
// it before it sees the connection go. A port-forward with no forwarded
// connection open has no stream to carry words, and ends as before.
//
// A message is sent only at a frame boundary; a connection lost in the
// middle of a frame's payload ends as before (an exec ended on purpose
// there has the frame finished with zeros first; a port-forward's data is
// never padded). An exec's or attach's frame header reaches the client
// only once it is whole, so that a session lost or ended with part of a
// header read (SPDY senders write a header in pieces) still ends in
// words. Other upgrades are returned unchanged.
//
// A session ended on purpose — its request's context canceled with a
// cause that says how a client is to be told (HTTPStatus and
// ClientMessage, as tunnel.AccessError does) — ends with that cause's
// words, whatever error the cut connection reads with; from then on what
// the client still sends is dropped, so that its side of the copy does
// not fail and cut the last words short, and what the server still sends
// goes on only as far as the end of the frame in progress (the server
// may answer the cut with an end of its own, which the client must not
// read before the words).
func EndInWords(resp *http.Response, conn io.ReadWriteCloser) io.ReadWriteCloser {
	if resp == nil || resp.Request == nil {
		return conn
	}
	path := resp.Request.URL.Path
	websocket := strings.EqualFold(resp.Header.Get("Upgrade"), "websocket")
	spdy := strings.HasPrefix(strings.ToUpper(resp.Header.Get("Upgrade")), "SPDY/3")
	e := &ending{ReadWriteCloser: conn, ctx: resp.Request.Context(), clientDone: make(chan struct{})}
	switch {
	case strings.HasSuffix(path, "/portforward"):
		switch {
		case websocket && resp.Header.Get("Sec-Websocket-Protocol") == "SPDY/3.1+portforward.k8s.io":
		case spdy && resp.Header.Get("X-Stream-Protocol-Version") == "portforward.k8s.io":
		default:
			return conn
		}
		e.t = newForwardTracker(websocket)
		e.linger = PortForwardLinger
	case !strings.HasSuffix(path, "/exec") && !strings.HasSuffix(path, "/attach"):
		return conn
	case websocket:
		proto := resp.Header.Get("Sec-Websocket-Protocol")
		if !strings.HasSuffix(proto, "v5.channel.k8s.io") && !strings.HasSuffix(proto, "v4.channel.k8s.io") {
			return conn
		}
		e.t = &frameTracker{headerLen: wsHeaderLen, payloadLen: wsPayloadLen, last: wsFinal}
		e.afterLoss = execAfterLoss
	case spdy:
		v := resp.Header.Get("X-Stream-Protocol-Version")
		if v != "v4.channel.k8s.io" && v != "v5.channel.k8s.io" {
			return conn
		}
		e.t = &frameTracker{headerLen: spdyHeaderLen, payloadLen: spdyPayloadLen, last: spdyFinal}
		e.afterLoss = execAfterLoss
	default:
		return conn
	}
	return e
}

// PortForwardLinger is how long a port-forward's connection stays open
// after its last words, unless its client closes it first.
const PortForwardLinger = 2 * time.Second

// A tracker follows what an upgraded connection carries, to know where
// and how its last words can go.
type tracker interface {
	fromServer(p []byte)
	fromClient(p []byte)
	// boundary reports whether the server's bytes seen so far end
	// with a frame.
	boundary() bool
	// cutAt is the number of payload bytes left in the frame the
	// server's bytes end in, if only payload is missing (else 0).
	cutAt() uint64
	// final is what to send the client last, a Status of code carrying
	// msg in the client's framing; nil if nothing can be said here.
	final(code int, msg string) []byte
	// heldHead is how many of the server's last bytes are a frame header
	// not yet whole, which the client is not sent until it is (0 if the
	// tracker holds nothing back); dropHead forgets them, when they are
	// not going to be sent.
	heldHead() int
	dropHead()
}

// frameTracker follows a byte stream's frames to know where one ends: each
// frame is a header, whose length headerLen reads from its first bytes,
// and a payload, whose length payloadLen reads from the header.
type frameTracker struct {
	head []byte // a header in progress
	left uint64 // payload bytes left in the current frame
	// headerLen is the length of the header that begins with head, or 0
	// while too little of it is known.
	headerLen  func(head []byte) int
	payloadLen func(head []byte) uint64
	// last is what to send the client last: a Status of code carrying
	// msg, framed.
	last func(code int, msg string) []byte
}

// fromServer takes the next bytes of the stream.
func (f *frameTracker) fromServer(p []byte) {
	for len(p) > 0 {
		if f.left > 0 {
			k := min(uint64(len(p)), f.left)
			f.left -= k
			p = p[k:]
			continue
		}
		f.head = append(f.head, p[0])
		p = p[1:]
		if need := f.headerLen(f.head); need > 0 && len(f.head) == need {
			f.left = f.payloadLen(f.head)
			f.head = f.head[:0]
		}
	}
}

func (f *frameTracker) fromClient([]byte) {}

func (f *frameTracker) boundary() bool { return f.left == 0 && len(f.head) == 0 }

func (f *frameTracker) cutAt() uint64 {
	if len(f.head) == 0 {
		return f.left
	}
	return 0
}

// A SPDY sender (spdystream, as the kubelet's) writes a frame's header in
// two writes of four bytes and its payload in a third, and the API server
// passes each on as it comes: a read can end inside a header. Held back
// until it is whole, the client's bytes only ever end at a frame boundary
// or inside a payload, where last words can always follow.
func (f *frameTracker) heldHead() int { return len(f.head) }

func (f *frameTracker) dropHead() { f.head = f.head[:0] }

func (f *frameTracker) final(code int, msg string) []byte {
	if !f.boundary() {
		return nil
	}
	return f.last(code, msg)
}

// execAfterLoss ends the words of an exec or attach lost for good.
const execAfterLoss = "; the command may have finished or may still be running in the container"

// ending is a connection whose failed read becomes a last message.
type ending struct {
	io.ReadWriteCloser
	ctx       context.Context // the request's: its cause, if it was ended
	t         tracker
	afterLoss string        // what a loss's words end with
	linger    time.Duration // how long to wait for the client to go after the words
	last      []byte
	held      []byte // the start of a frame header, not yet sent (heldHead)
	ready     []byte // bytes read that a short p could not take
	done      bool
	// lost: a write failed, or the session ended; what the client
	// sends is dropped.
	lost atomic.Bool
	// clientDone is closed when the client sends no more (CloseWrite).
	clientDone chan struct{}
	doneOnce   sync.Once
}

// endedOnPurpose is the cause e's request was ended with, if it says in
// which words.
func (e *ending) endedOnPurpose() error {
	if e.ctx == nil || e.ctx.Err() == nil {
		return nil
	}
	cause := context.Cause(e.ctx)
	if _, _, ok := endedBy(cause); ok {
		return cause
	}
	return nil
}

// Write drops what the client sends once the session was ended on
// purpose: see EndInWords.
//
// A connection lost under the session fails writes too, often before the
// read that becomes the words: such a failure is not passed on either
// (the client's copy would end first, and a proxy close the client's
// connection before the words reach it — kubectl then prints only its
// own "lost connection"). From then on what the client sends is dropped;
// the reading side, which fails on the same lost connection, ends the
// session in words.
func (e *ending) Write(p []byte) (int, error) {
	if e.lost.Load() || e.endedOnPurpose() != nil {
		return len(p), nil
	}
	e.t.fromClient(p)
	if _, err := e.ReadWriteCloser.Write(p); err != nil {
		e.lost.Store(true)
	}
	return len(p), nil
}

// CloseWrite passes the client's half-close on (errors.ErrUnsupported
// if the connection under it takes none); after last words it also ends
// the wait for the client to go. (Close does not: a proxy closes the
// connection when the request is ended, which is when the words begin.)
func (e *ending) CloseWrite() error {
	e.doneOnce.Do(func() { close(e.clientDone) })
	if cw, ok := e.ReadWriteCloser.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (e *ending) Read(p []byte) (int, error) {
	if e.done {
		if len(e.last) == 0 {
			e.lingerAfterWords()
			return 0, io.EOF
		}
		n := copy(p, e.last)
		e.last = e.last[n:]
		return n, nil
	}
	if len(e.ready) > 0 {
		n := copy(p, e.ready)
		e.ready = e.ready[n:]
		return n, nil
	}
	// A header held back from the last read goes first, with the bytes
	// that finish it.
	buf := p
	if len(e.held) > 0 && len(p) <= len(e.held) {
		buf = make([]byte, len(e.held)+512) // a reader with a tiny buffer
	}
	k := copy(buf, e.held)
	e.held = e.held[:0]
	n, err := e.ReadWriteCloser.Read(buf[k:])
	cause := e.endedOnPurpose()
	if cause != nil {
		// Ended on purpose: what the server sent from the end on is not
		// the session's. (Closing a TLS connection to it sends
		// close_notify before the socket closes, and an API server can
		// answer that with an end of its own — a WebSocket close 1000,
		// which kubectl would take for a command that ended well —
		// before the socket is gone.) Only what finishes the frame in
		// progress goes on, then the words; a header held back never
		// goes (nor what would have finished it).
		e.t.dropHead()
		j := 0
		if k == 0 {
			for ; j < n && !e.t.boundary(); j++ {
				e.t.fromServer(buf[j : j+1])
			}
		}
		n, err = j, cause
	} else {
		e.t.fromServer(buf[k : k+n])
		n += k
		if h := e.t.heldHead(); h > 0 {
			e.held = append(e.held, buf[n-h:n]...)
			n -= h
		}
	}
	if len(buf) > len(p) { // the tiny buffer's
		c := copy(p, buf[:n])
		e.ready = append(e.ready[:0], buf[c:n]...)
		n = c
	}
	if err == nil {
		return n, nil
	}
	// A session ended on purpose ends in words even if its cut connection
	// reads as if it had ended: it did not end by itself.
	if err == io.EOF && cause == nil {
		return n, err
	}
	// The start of a header the connection lost never finished is not
	// sent: the words can follow what was.
	e.t.dropHead()
	e.held = e.held[:0]
	var pad []byte
	if left := e.t.cutAt(); cause != nil && left > 0 && left <= maxPad {
		// Cut on purpose in the middle of a frame's payload (the API
		// server's bytes come in whatever pieces TCP gives): the frame
		// is finished with zeros, the end of output that was never
		// going to arrive, so that the words can follow.
		pad = make([]byte, left)
		e.t.fromServer(pad)
	}
	if cause != nil {
		err = cause
	}
	if last := e.t.final(lastWords(err, e.afterLoss)); last != nil {
		e.done = true
		e.lost.Store(true)
		e.last = append(pad, last...)
		if len(e.ready) > 0 { // what the tiny buffer could not take goes first
			e.last = append(e.ready, e.last...)
			e.ready = nil
		}
		return n, nil
	}
	return n, err
}

// lingerAfterWords waits, once, for the client to stop sending after
// reading its last words, at most e.linger. A proxy that copies the
// client's bytes without passing its half-close on (httputil.ReverseProxy)
// returns when the client goes, before the wait is over; the wait then
// ends by itself.
func (e *ending) lingerAfterWords() {
	if e.linger <= 0 {
		return
	}
	timer := time.NewTimer(e.linger)
	defer timer.Stop()
	e.linger = 0
	select {
	case <-e.clientDone:
	case <-timer.C:
	}
}

// maxPad bounds the zeros that finish a frame cut on purpose.
const maxPad = 64 << 10

// lastWords is the Status a session lost with err ends with; a loss's
// words end with afterLoss.
func lastWords(err error, afterLoss string) (code int, msg string) {
	if code, msg, ok := endedBy(err); ok {
		return code, "clusterconnect: " + msg
	}
	return http.StatusServiceUnavailable, fmt.Sprintf("clusterconnect: the connection to the cluster was lost and could not be resumed (%v)%s", err, afterLoss)
}

// A statusError is an error that says how a client is to be told of it:
// the relay's refusals (tunnel.AccessError), the client proxy's.
type statusError interface {
	error
	HTTPStatus() int
	ClientMessage() string
}

// endedBy reports whether err says why a session was ended on purpose
// (the caller's right to it ended, say), and in which words.
func endedBy(err error) (code int, msg string, ok bool) {
	var se statusError
	if err == nil || !errors.As(err, &se) {
		return 0, "", false
	}
	return se.HTTPStatus(), se.ClientMessage(), true
}

func statusJSON(code int, msg string) []byte {
	b, _ := json.Marshal(&metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Reason: metav1.StatusReason(reasonOf(code)),
		Message: msg, Code: int32(code),
	})
	return b
}

// WebSocket frames, as a server sends them (RFC 6455 §5.2).

// wsHeaderLen is the length of the header that begins with h, or 0 while
// too little of it is known.
func wsHeaderLen(h []byte) int {
	if len(h) < 2 {
		return 0
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 {
		n += 4
	}
	return n
}

func wsPayloadLen(h []byte) uint64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return uint64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		return binary.BigEndian.Uint64(h[2:])
	default:
		return uint64(l)
	}
}

// errorChannel is the channel of the error stream in the channel
// protocols.
const errorChannel = 3

func wsFinal(code int, msg string) []byte {
	payload := append([]byte{errorChannel}, statusJSON(code, msg)...)
	out := wsFrame(nil, 0x2, payload)
	// A close frame, 1000: the end is said, not an abnormal closure.
	return wsFrame(out, 0x8, []byte{0x03, 0xe8})
}

func wsFrame(b []byte, opcode byte, payload []byte) []byte {
	b = append(b, 0x80|opcode)
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// SPDY/3.1 frames: an 8-byte header whose last three bytes are the
// payload's length, for data and control frames alike.
func spdyHeaderLen([]byte) int { return 8 }

func spdyPayloadLen(h []byte) uint64 { return uint64(h[5])<<16 | uint64(h[6])<<8 | uint64(h[7]) }

// spdyErrorStream is the stream ID of the error stream: client-go's
// remotecommand creates it first, and a SPDY client's first stream is 1.
const spdyErrorStream = 1

func spdyFinal(code int, msg string) []byte {
	body := statusJSON(code, msg)
	b := binary.BigEndian.AppendUint32(nil, spdyErrorStream)
	const flagFin = 0x01
	b = append(b, flagFin, byte(len(body)>>16), byte(len(body)>>8), byte(len(body)))
	return append(b, body...)
}

// Upgrades wraps next so that each exec, attach or port-forward it upgrades ends in
// words when its connection is lost for good (EndInWords). The relay
// (tunnel.RelayConfig.Middleware) and the client proxy put it in front of
// their transports; other requests pass untouched.
func Upgrades(next http.RoundTripper) http.RoundTripper {
	return upgrades{next}
}

type upgrades struct{ next http.RoundTripper }

func (u upgrades) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := u.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		return resp, err
	}
	if conn, ok := resp.Body.(io.ReadWriteCloser); ok {
		resp.Body = EndInWords(resp, conn)
	}
	return resp, nil
}
