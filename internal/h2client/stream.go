//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its Framer and hpack are what the relay's client is written on, and on Go 1.26 it is not a wrapper of net/http. This package is the relay side of the tunnel written on it (tunnel/internal/h2server the agent side); in package tunnel only relay_clients_h2.go names it. See PROTOCOL.md.

package h2client

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// One stream of the relay's client: the request's body going out, the
// answer coming in, and how either side ends it.

// h2Stream is one request and its answer.
type h2Stream struct {
	cc      *Conn
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
	recvEnd    bool        // END_STREAM received
	sendDone   bool        // END_STREAM sent, or sending given up
	sendStop   error       // why sending must stop
	err        error       // what Read returns once the buffer is empty
	reset      bool        // RST_STREAM sent or received
	released   bool        // the body's buffers and budget are given back
	received   int64       // DATA bytes of the answer
	target     int32       // the window the relay keeps open for this stream
	avail      int32       // what the agent may still send
	charged    int64       // taken from the budget
	read       int64       // bytes the reader took
	epochRead  int64       // read at the start of the tuning epoch
	epochStart time.Time   // when the tuning epoch began
	bodyBytes  int64       // Content-Length of the answer, or -1
	trailer    http.Header // the answer's trailers until the reader reaches them
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
	if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified {
		s.bodyBytes = -1 // its Content-Length may describe a body it never has
	}
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
		s.endRecv()
	} else if s.isHead {
		// The body of a HEAD answer is nobody's: free the stream when it
		// ends, which it may not do for the agent's sake.
		s.release()
	}
}

// data takes a DATA frame's payload, pieces (whole chunks, which become
// the stream's) and then p; n is the frame's length, padding included.
func (s *h2Stream) data(pieces [][]byte, p []byte, n int32, end bool) {
	kept := false
	defer func() {
		if !kept {
			for _, c := range pieces {
				putChunk(c)
			}
		}
	}()
	size := len(p)
	for _, c := range pieces {
		size += len(c)
	}
	s.mu.Lock()
	if !s.headers || s.recvEnd {
		s.mu.Unlock()
		s.fail(s.cc.cfg.peerErr(" sent data out of place"), http2.ErrCodeStreamClosed)
		return
	}
	if n > s.avail {
		s.mu.Unlock()
		s.fail(s.cc.cfg.peerErr(" sent past the stream's window"), http2.ErrCodeFlowControl)
		return
	}
	s.avail -= n
	s.received += int64(size)
	if s.bodyBytes >= 0 && s.received > s.bodyBytes {
		s.mu.Unlock()
		s.fail(s.cc.cfg.peerErr(" sent more than its Content-Length of %d", s.bodyBytes), http2.ErrCodeProtocol)
		return
	}
	if size > 0 && !s.released {
		s.buf.add(pieces)
		kept = true
		s.buf.write(p)
		s.cond.Broadcast()
	}
	s.mu.Unlock()
	if pad := n - int32(size); pad > 0 {
		s.returnWindow(0) // padding is nobody's to read
	}
	if end {
		s.endRecv()
	}
}

// trailers ends the answer with its trailers.
func (s *h2Stream) trailers(h http.Header, ended bool) {
	if !ended {
		s.fail(s.cc.cfg.peerErr(" sent trailers that do not end the stream"), http2.ErrCodeProtocol)
		return
	}
	s.mu.Lock()
	if !s.recvEnd && s.err == nil {
		s.trailer = h // into resp.Trailer by the reader, at the end of the body
	}
	s.mu.Unlock()
	s.endRecv()
}

// endRecv marks the answer complete.
func (s *h2Stream) endRecv() {
	s.mu.Lock()
	if s.recvEnd {
		s.mu.Unlock()
		return
	}
	s.recvEnd = true
	if s.err == nil {
		s.err = io.EOF
		if s.bodyBytes >= 0 && s.received < s.bodyBytes && !s.isHead {
			s.err = s.cc.cfg.peerErr("'s answer ended %d bytes short of its Content-Length: %w", s.bodyBytes-s.received, io.ErrUnexpectedEOF)
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
		s.stopSending(s.cc.cfg.peerErr(" needs no more of the request body"), false)
		s.end()
		return
	}
	if code == http2.ErrCodeRefusedStream {
		s.fail(refusedError{s.cc.cfg.peerErr(" refused the stream unprocessed")}, 0)
		return
	}
	s.fail(s.cc.cfg.peerErr(" reset the stream: %v", code), 0)
}

// ErrRefused is what a stream the server reset with REFUSED_STREAM fails
// with (errors.Is): the server did not process it, so it may be sent
// again.
var ErrRefused = errors.New("the stream was refused unprocessed")

type refusedError struct{ error }

func (refusedError) Is(target error) bool { return target == ErrRefused }

// abort ends the stream for err on the relay's side (a cancelled request,
// a closed body, a failed write), telling the agent if asked.
func (s *h2Stream) abort(err error, tell bool) {
	code := http2.ErrCode(0)
	if tell {
		code = http2.ErrCodeCancel
	}
	s.fail(err, code)
}

// fail ends the stream for err; a non-zero code is sent to the agent as
// RST_STREAM unless the stream is already reset or over.
func (s *h2Stream) fail(err error, code http2.ErrCode) {
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
	s.fail(fmt.Errorf("%w: %w", s.cc.cfg.sentinel(errConnClosed), err), 0)
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
	cc := s.cc
	// Reads of whole frames: a read's last frame then fills whole TLS
	// records too.
	cc.mu.Lock()
	frame := int(wholeRecords(min(cc.peerFrame, 2*TLSRecord)))
	cc.mu.Unlock()
	buf := (*bp)[:len(*bp)/frame*frame]
	var sent int64
	for {
		n, rerr := s.body.Read(buf)
		sent += int64(n)
		if contentLength >= 0 && sent > contentLength {
			s.abort(fmt.Errorf("%sthe request body is longer than its Content-Length of %d", s.cc.cfg.prefix, contentLength), true)
			return
		}
		last := rerr == io.EOF || (contentLength >= 0 && sent == contentLength && rerr == nil)
		if rerr != nil && rerr != io.EOF {
			if err := s.sendErr(); err == nil {
				s.abort(fmt.Errorf("%sreading the request body: %w", s.cc.cfg.prefix, rerr), true)
			}
			return
		}
		if last && contentLength >= 0 && sent < contentLength {
			s.abort(fmt.Errorf("%sthe request body ended %d bytes short of its Content-Length", s.cc.cfg.prefix, contentLength-sent), true)
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
				if err := cc.writeData(s.id, end && !trailers, p[:k]); err != nil {
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

// bodyBufs hold what a request body's Read gives, one DATA frame of two
// whole TLS records at most.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 2*TLSRecord-9); return &b }}

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
		trailer := s.trailer
		s.trailer = nil
		s.mu.Unlock()
		if err == io.EOF {
			// Trailers go into resp.Trailer here, on the reader's
			// goroutine, which may be reading resp.Trailer's names.
			if len(trailer) > 0 && s.resp.Trailer == nil {
				s.resp.Trailer = http.Header{}
			}
			for k, vs := range trailer {
				s.resp.Trailer[k] = vs
			}
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
