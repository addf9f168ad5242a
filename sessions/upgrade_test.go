package sessions_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/sessions"
)

// chunked is a connection that reads b in random pieces, then fails with
// err, calling atEnd first if set (a session ended on purpose once the
// server's bytes are all read).
type chunked struct {
	b     []byte
	r     *rand.Rand
	err   error
	atEnd func()
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		if c.atEnd != nil {
			c.atEnd()
		}
		return 0, c.err
	}
	n := min(len(p), 1+c.r.IntN(len(c.b)), len(c.b))
	n = copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}
func (c *chunked) Write(p []byte) (int, error) { return len(p), nil }
func (c *chunked) Close() error                { return nil }

func upgraded(path string, h http.Header) *http.Response {
	return &http.Response{StatusCode: 101, Header: h, Request: &http.Request{URL: &url.URL{Path: path}}}
}

func wsFrame(opcode byte, payload []byte) []byte {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
	return append(b, payload...)
}

func spdyData(stream uint32, flags byte, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, stream)
	b = append(b, flags, byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload)))
	return append(b, payload...)
}

var errLost = errors.New("reattach: the session's connection was lost")

// status decodes the Status in a final message's payload.
func status(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var st map[string]any
	require.NoError(t, json.Unmarshal(b, &st), "%q", b)
	return st
}

func TestEndInWordsWebSocket(t *testing.T) {
	h := http.Header{"Upgrade": {"websocket"}, "Sec-Websocket-Protocol": {"v5.channel.k8s.io"}}
	var stream []byte
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 70000} {
		stream = append(stream, wsFrame(0x2, append([]byte{1}, bytes.Repeat([]byte{'x'}, n)...))...)
	}
	for seed := range uint64(20) {
		conn := sessions.EndInWords(upgraded("/api/v1/namespaces/ns/pods/p/exec", h), &chunked{b: stream, r: rand.New(rand.NewPCG(seed, 1)), err: errLost})
		got, err := io.ReadAll(conn)
		require.NoError(t, err, "the client reads the end, not the error")
		require.True(t, bytes.HasPrefix(got, stream), "everything the server sent comes first")
		last := got[len(stream):]
		require.Equal(t, byte(0x82), last[0], "a binary frame")
		n := int(binary.BigEndian.Uint16(last[2:]))
		require.EqualValues(t, 126, last[1])
		payload := last[4 : 4+n]
		assert.Equal(t, byte(3), payload[0], "on the error channel")
		st := status(t, payload[1:])
		assert.Equal(t, "Failure", st["status"])
		assert.Contains(t, st["message"], "the connection to the cluster was lost")
		assert.Equal(t, []byte{0x88, 2, 0x03, 0xe8}, last[4+n:], "then a normal close")
	}
}

func TestEndInWordsSPDY(t *testing.T) {
	h := http.Header{"Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v4.channel.k8s.io"}}
	stream := append(spdyData(3, 0, []byte("stdout bytes")), spdyData(5, 0, bytes.Repeat([]byte{'e'}, 40000))...)
	conn := sessions.EndInWords(upgraded("/api/v1/namespaces/ns/pods/p/attach", h), &chunked{b: stream, r: rand.New(rand.NewPCG(7, 7)), err: errLost})
	got, err := io.ReadAll(conn)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(got, stream))
	last := got[len(stream):]
	assert.Equal(t, []byte{0, 0, 0, 1}, last[:4], "on stream 1, the error stream")
	assert.Equal(t, byte(1), last[4], "with FIN")
	st := status(t, last[8:])
	assert.Contains(t, st["message"], "the command may have finished or may still be running")
}

// endedOnPurpose is a cause that says how a client is to be told.
type endedOnPurpose struct{}

func (endedOnPurpose) Error() string   { return "ended" }
func (endedOnPurpose) HTTPStatus() int { return http.StatusForbidden }
func (endedOnPurpose) ClientMessage() string {
	return "you may no longer be erin; the session was ended"
}

// failingWrites fails every write, as a connection closed under a copy.
type failingWrites struct{ *chunked }

func (failingWrites) Write([]byte) (int, error) {
	return 0, errors.New("use of closed network connection")
}

// A session whose request was ended on purpose ends in the cause's words,
// whatever its cut connection reads with, and from then on drops what the
// client sends instead of failing its copy.
func TestEndInWordsSaysWhyASessionWasEnded(t *testing.T) {
	h := http.Header{"Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v5.channel.k8s.io"}}
	ctx, cancel := context.WithCancelCause(context.Background())
	resp := upgraded("/api/v1/namespaces/ns/pods/p/exec", h)
	resp.Request = resp.Request.WithContext(ctx)
	stream := spdyData(3, 0, []byte("stdout bytes"))
	conn := sessions.EndInWords(resp, failingWrites{&chunked{b: stream, r: rand.New(rand.NewPCG(1, 1)), err: net.ErrClosed}})

	cancel(endedOnPurpose{})
	n, err := conn.Write([]byte("stdin"))
	assert.NoError(t, err, "after the end, what the client sends is dropped")
	assert.Equal(t, 5, n)

	got, err := io.ReadAll(conn)
	require.NoError(t, err)
	assert.NotContains(t, string(got), "stdout bytes", "a frame the server sent after the end is not the session's")
	st := status(t, got[8:])
	assert.Equal(t, "clusterconnect: you may no longer be erin; the session was ended", st["message"])
	assert.EqualValues(t, http.StatusForbidden, st["code"])
}

// steps reads its pieces one per Read, calling a piece's before first,
// then fails with err.
type steps struct {
	pieces []piece
	err    error
}

type piece struct {
	b      []byte
	before func()
}

func (s *steps) Read(p []byte) (int, error) {
	if len(s.pieces) == 0 {
		return 0, s.err
	}
	next := s.pieces[0]
	if next.before != nil {
		next.before()
	}
	n := copy(p, next.b)
	if n < len(next.b) { // the rest of the piece is read next
		s.pieces[0] = piece{b: next.b[n:]}
	} else {
		s.pieces = s.pieces[1:]
	}
	return n, nil
}
func (s *steps) Write(p []byte) (int, error) { return len(p), nil }
func (s *steps) Close() error                { return nil }

// A connection lost under a session fails the client's writes before the
// read that becomes the words, at times: the write's failure is not
// passed on (the client's copy would end, and a proxy close the client's
// connection before the words), what follows is dropped, and the words
// come from the reading side.
func TestEndInWordsALostWriteIsNotTheEnd(t *testing.T) {
	h := http.Header{"Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v5.channel.k8s.io"}}
	stream := spdyData(3, 0, []byte("stdout bytes"))
	conn := sessions.EndInWords(upgraded("/api/v1/namespaces/ns/pods/p/exec", h), failingWrites{&chunked{b: stream, r: rand.New(rand.NewPCG(1, 1)), err: net.ErrClosed}})
	for range 2 {
		n, err := conn.Write([]byte("stdin"))
		assert.NoError(t, err)
		assert.Equal(t, 5, n)
	}
	got, err := io.ReadAll(conn)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(got, stream))
	assert.Contains(t, status(t, got[len(stream)+8:])["message"], "the connection to the cluster was lost")
}

// Once a session is ended on purpose, what its server sends is not the
// session's: closing a TLS connection sends close_notify before the
// socket closes, and the API server can answer with a WebSocket close
// 1000 of its own, which kubectl would take for a command that ended
// well. The frame in progress is finished, the rest dropped, and the
// words follow.
func TestEndInWordsDropsWhatTheServerSendsAfterTheEnd(t *testing.T) {
	h := http.Header{"Upgrade": {"websocket"}, "Sec-Websocket-Protocol": {"v5.channel.k8s.io"}}
	ctx, cancel := context.WithCancelCause(context.Background())
	resp := upgraded("/api/v1/namespaces/ns/pods/p/exec", h)
	resp.Request = resp.Request.WithContext(ctx)
	stdout := wsFrame(0x2, []byte("\x01more\n"))
	serverClose := wsFrame(0x8, []byte{0x03, 0xe8})
	conn := sessions.EndInWords(resp, &steps{pieces: []piece{
		{b: stdout},
		{b: stdout[:4]},
		{b: append(append([]byte{}, stdout[4:]...), serverClose...), before: func() { cancel(endedOnPurpose{}) }},
	}, err: net.ErrClosed})
	got, err := io.ReadAll(conn)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(got, append(append([]byte{}, stdout...), stdout...)), "the frames before the end, the one in progress finished")
	last := got[2*len(stdout):]
	require.Greater(t, len(last), 3)
	assert.Equal(t, []byte{0x82}, last[:1], "then the words, not the server's close")
	assert.Contains(t, string(last), "\x03{\"kind\":\"Status\"", "a Status on the error channel")
	assert.Contains(t, string(last), "you may no longer be erin")
}

// A session ended on purpose while a frame's payload was still arriving
// (the API server's bytes come in whatever pieces TCP gives) has the frame
// finished with zeros, then the words: kubectl is told why rather than
// left with a cut frame.
func TestEndInWordsFinishesAFrameCutOnPurpose(t *testing.T) {
	h := http.Header{"Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v5.channel.k8s.io"}}
	ctx, cancel := context.WithCancelCause(context.Background())
	resp := upgraded("/api/v1/namespaces/ns/pods/p/exec", h)
	resp.Request = resp.Request.WithContext(ctx)
	frame := spdyData(3, 0, []byte("stdout bytes"))
	cut := frame[:8+5] // the header and "stdou"
	conn := sessions.EndInWords(resp, &chunked{b: cut, r: rand.New(rand.NewPCG(2, 2)), err: net.ErrClosed, atEnd: func() { cancel(endedOnPurpose{}) }})
	got, err := io.ReadAll(conn)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(got, cut))
	assert.Equal(t, make([]byte, 7), got[len(cut):len(frame)], "the frame finished with zeros")
	last := got[len(frame):]
	assert.Equal(t, []byte{0, 0, 0, 1}, last[:4], "then the error stream")
	assert.Equal(t, "clusterconnect: you may no longer be erin; the session was ended", status(t, last[8:])["message"])

	// Lost, not ended: a cut frame ends as before, without words.
	conn = sessions.EndInWords(upgraded("/api/v1/namespaces/ns/pods/p/exec", h), &chunked{b: cut, r: rand.New(rand.NewPCG(2, 2)), err: errLost})
	_, err = io.ReadAll(conn)
	assert.ErrorIs(t, err, errLost)
}

// The kubelet's SPDY (spdystream) writes a frame's header in two writes
// of four bytes and its payload in a third, and the API server passes
// each on as it comes: a session can end, on purpose or lost, with half a
// header read. That half is never sent, so that the words follow whole
// frames; before, kubectl over SPDY got the half header and no words, and
// exited 0 with nothing on stderr, as if its command had succeeded.
func TestEndInWordsHoldsBackAHeaderCutInTwo(t *testing.T) {
	h := http.Header{"Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v4.channel.k8s.io"}}
	frame := spdyData(3, 0, []byte("more\n"))
	for _, c := range []struct {
		name, words string
		ended       bool
	}{
		{"ended", "clusterconnect: you may no longer be erin; the session was ended", true},
		{"lost", "the connection to the cluster was lost", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			resp := upgraded("/api/v1/namespaces/ns/pods/p/exec", h)
			resp.Request = resp.Request.WithContext(ctx)
			end := func() {
				if c.ended {
					cancel(endedOnPurpose{})
				}
			}
			conn := sessions.EndInWords(resp, &steps{pieces: []piece{
				{b: frame[:4]}, {b: frame[4:8]}, {b: frame[8:]}, // as spdystream writes
				{b: frame[:4]},
				{before: end}, // ended with the next header half read
			}, err: net.ErrClosed})
			got, err := io.ReadAll(conn)
			require.NoError(t, err, "the session ends in words")
			require.True(t, bytes.HasPrefix(got, frame), "%q", got)
			last := got[len(frame):]
			require.Greater(t, len(last), 8, "%q", got)
			assert.Equal(t, []byte{0, 0, 0, 1}, last[:4], "the words on the error stream, after whole frames only")
			assert.Contains(t, status(t, last[8:])["message"], c.words)
		})
	}
}

// A reader with a buffer smaller than a held header's start still reads
// every byte in order.
func TestEndInWordsReadsWithATinyBuffer(t *testing.T) {
	h := http.Header{"Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v4.channel.k8s.io"}}
	stream := append(spdyData(3, 0, []byte("stdout bytes")), spdyData(5, 0, []byte("stderr"))...)
	var pieces []piece
	for i := 0; i < len(stream); i += 3 {
		pieces = append(pieces, piece{b: stream[i:min(i+3, len(stream))]})
	}
	conn := sessions.EndInWords(upgraded("/api/v1/namespaces/ns/pods/p/exec", h), &steps{pieces: pieces, err: errLost})
	var got []byte
	p := make([]byte, 2)
	for {
		n, err := conn.Read(p)
		got = append(got, p[:n]...)
		if err != nil {
			break
		}
		if n == 0 && len(got) > len(stream)+8 && bytes.Contains(got[len(stream):], []byte("lost")) {
			break
		}
	}
	require.True(t, bytes.HasPrefix(got, stream), "%q", got)
	assert.Contains(t, string(got[len(stream):]), "the connection to the cluster was lost")
}

// A connection errLost in the middle of a frame, or ended cleanly, or of
// another kind, reads as it would without EndInWords.
func TestEndInWordsLeavesTheRestAlone(t *testing.T) {
	ws := http.Header{"Upgrade": {"websocket"}, "Sec-Websocket-Protocol": {"v5.channel.k8s.io"}}
	frame := wsFrame(0x2, bytes.Repeat([]byte{'x'}, 1000))
	for name, tc := range map[string]struct {
		path   string
		h      http.Header
		stream []byte
		err    error
	}{
		"mid-frame":     {"/api/v1/namespaces/ns/pods/p/exec", ws, frame[:500], errLost},
		"clean end":     {"/api/v1/namespaces/ns/pods/p/exec", ws, frame, io.EOF},
		"port-forward":  {"/api/v1/namespaces/ns/pods/p/portforward", ws, frame, errLost},
		"old protocol":  {"/api/v1/namespaces/ns/pods/p/exec", http.Header{"Upgrade": {"websocket"}, "Sec-Websocket-Protocol": {"channel.k8s.io"}}, frame, errLost},
		"other upgrade": {"/api/v1/namespaces/ns/pods/p/exec", http.Header{"Upgrade": {"echo/1"}}, frame, errLost},
	} {
		t.Run(name, func(t *testing.T) {
			conn := sessions.EndInWords(upgraded(tc.path, tc.h), &chunked{b: tc.stream, r: rand.New(rand.NewPCG(1, 2)), err: tc.err})
			got, err := io.ReadAll(conn)
			assert.Equal(t, tc.stream, got)
			if tc.err == io.EOF {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, errLost)
			}
		})
	}
}

// FuzzEndInWords: whatever a server sends and however it is split, the
// client reads exactly it, less the start of a frame header the server
// never finished (held back: TestEndInWordsHoldsBackAHeaderCutInTwo), then
// either the error or one last message.
func FuzzEndInWords(f *testing.F) {
	f.Add(wsFrame(0x2, []byte{1, 'h', 'i'}), uint64(1), true)
	f.Add(append(wsFrame(0x1, bytes.Repeat([]byte{'a'}, 200)), 0x82, 0xfe), uint64(2), true)
	f.Add(spdyData(1, 0, []byte("x")), uint64(3), false)
	f.Add([]byte{0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint64(4), true)
	f.Add(append(spdyData(3, 0, []byte("more\n")), 0, 0, 0, 3), uint64(5), false) // half a header last
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64, websocket bool) {
		h := http.Header{"Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"v4.channel.k8s.io"}}
		if websocket {
			h = http.Header{"Upgrade": {"websocket"}, "Sec-Websocket-Protocol": {"v4.channel.k8s.io"}}
		}
		conn := sessions.EndInWords(upgraded("/api/v1/namespaces/ns/pods/p/exec", h), &chunked{b: stream, r: rand.New(rand.NewPCG(seed, seed)), err: errLost})
		got, err := io.ReadAll(conn)
		sent := stream
		if !bytes.HasPrefix(got, stream) {
			// Only a header's start (14 bytes at most, WebSocket's
			// longest header) may be missing, and only if words follow.
			m := 0
			for m < len(got) && m < len(stream) && got[m] == stream[m] {
				m++
			}
			if len(stream)-m >= 14 || err != nil && len(got) > m {
				t.Fatalf("read %d bytes that are not what the server sent", len(got))
			}
			sent = stream[:m]
		}
		if err == nil && len(got) == len(sent) && len(stream) > 0 {
			t.Fatal("neither the error nor a last message")
		}
	})
}
