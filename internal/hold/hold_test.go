package hold

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
)

// recordingConn keeps each write it is given.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	wrote  chan struct{}
	fail   error
}

func newRecordingConn() *recordingConn {
	return &recordingConn{wrote: make(chan struct{}, 16)}
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return 0, c.fail
	}
	c.writes = append(c.writes, bytes.Clone(p))
	select {
	case c.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }
func (c *recordingConn) Close() error                     { return nil }

func (c *recordingConn) got() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// headersFrame and dataFrame encode frames as x/net writes them.
func headersFrame(t *testing.T, stream uint32, endStream bool) []byte {
	var b bytes.Buffer
	require.NoError(t, http2.NewFramer(&b, nil).WriteHeaders(http2.HeadersFrameParam{
		StreamID: stream, BlockFragment: []byte{0x88}, EndHeaders: true, EndStream: endStream,
	}))
	return b.Bytes()
}

func dataFrame(t *testing.T, stream uint32, data []byte, endStream bool) []byte {
	var b bytes.Buffer
	require.NoError(t, http2.NewFramer(&b, nil).WriteData(stream, endStream, data))
	return b.Bytes()
}

// A small answer's HEADERS, written on their own by the HTTP/2 server,
// leave with its DATA in one write.
func TestHoldConnSendsHeadersWithTheirData(t *testing.T) {
	rc := newRecordingConn()
	h := NewConn(rc, time.Second, 0)
	h.hold = time.Hour // the DATA comes when the test says, however slow the machine
	headers, data := headersFrame(t, 1, false), dataFrame(t, 1, []byte("ok"), true)

	n, err := h.Write(headers)
	require.NoError(t, err)
	assert.Equal(t, len(headers), n)
	assert.Empty(t, rc.got(), "headers of a stream that goes on are held")

	n, err = h.Write(data)
	require.NoError(t, err)
	assert.Equal(t, len(data), n)
	assert.Equal(t, [][]byte{append(bytes.Clone(headers), data...)}, rc.got())
}

// On the client's side, after the connection preface, a request's
// HEADERS leave with its body.
func TestClientHoldConnSendsHeadersWithTheBody(t *testing.T) {
	rc := newRecordingConn()
	h := NewConn(rc, time.Second, len(http2.ClientPreface))
	h.hold = time.Hour
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	require.NoError(t, http2.NewFramer(&b, nil).WriteSettings())
	start := bytes.Clone(b.Bytes())
	_, err := h.Write(start[:10]) // the preface, cut short
	require.NoError(t, err)
	_, err = h.Write(start[10:])
	require.NoError(t, err)
	assert.Equal(t, [][]byte{start[:10], start[10:]}, rc.got(), "the preface and settings go at once")

	headers, body := headersFrame(t, 1, false), dataFrame(t, 1, []byte(`{"kind":"ConfigMap"}`), true)
	_, err = h.Write(headers)
	require.NoError(t, err)
	_, err = h.Write(body)
	require.NoError(t, err)
	assert.Equal(t, append(bytes.Clone(headers), body...), rc.got()[2])
	assert.Len(t, rc.got(), 3)
}

// Headers of several streams held at once leave together when the hold
// ends, and headers sent with a large body leave no large buffer on the
// connection (thousands of idle connections must not keep one each).
func TestHoldConnHoldsBriefly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := newRecordingConn()
		h := NewConn(rc, time.Second, 0)
		first, second := headersFrame(t, 1, false), headersFrame(t, 3, false)
		h.Write(first)
		h.Write(second)
		synctest.Wait()
		assert.Empty(t, rc.got())
		time.Sleep(For)
		synctest.Wait()
		assert.Equal(t, [][]byte{append(bytes.Clone(first), second...)}, rc.got())

		h.Write(headersFrame(t, 5, false))
		h.Write(dataFrame(t, 5, make([]byte, 64<<10), false))
		h.mu.Lock()
		defer h.mu.Unlock()
		assert.LessOrEqual(t, cap(h.held), keepHeld)
	})
}

// A connection holds at most maxHeld bytes: headers beyond that go at
// once, with what was held.
func TestHoldConnHoldsAtMostMaxHeld(t *testing.T) {
	rc := newRecordingConn()
	h := NewConn(rc, time.Second, 0)
	h.hold = time.Hour
	var b bytes.Buffer
	require.NoError(t, http2.NewFramer(&b, nil).WriteHeaders(http2.HeadersFrameParam{
		StreamID: 1, BlockFragment: make([]byte, 1<<10), EndHeaders: true,
	}))
	headers := b.Bytes()
	var sent int
	for sent <= maxHeld {
		_, err := h.Write(headers)
		require.NoError(t, err)
		sent += len(headers)
	}
	require.Len(t, rc.got(), 1)
	assert.Len(t, rc.got()[0], sent)
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Empty(t, h.held)
}

// Headers that end their stream, and anything else, go at once.
func TestHoldConnWritesOtherFramesAtOnce(t *testing.T) {
	for name, frame := range map[string][]byte{
		"headers ending the stream": headersFrame(t, 1, true),
		"data":                      dataFrame(t, 1, []byte("x"), false),
		"headers then data":         append(headersFrame(t, 3, false), dataFrame(t, 3, []byte("x"), false)...),
	} {
		t.Run(name, func(t *testing.T) {
			rc := newRecordingConn()
			h := NewConn(rc, time.Second, 0)
			_, err := h.Write(frame)
			require.NoError(t, err)
			assert.Equal(t, [][]byte{frame}, rc.got())
		})
	}
}

// Headers whose body comes later (a watch) leave when the hold is over,
// For after they were written, and not before.
func TestHoldConnReleasesHeldHeaders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := newRecordingConn()
		h := NewConn(rc, time.Second, 0)
		headers := headersFrame(t, 1, false)
		_, err := h.Write(headers)
		require.NoError(t, err)
		time.Sleep(For - time.Nanosecond)
		synctest.Wait()
		assert.Empty(t, rc.got(), "held until For has passed")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.Equal(t, [][]byte{headers}, rc.got())
	})
}

// A held write that fails fails every later write.
func TestHoldConnReportsAFailedHeldWrite(t *testing.T) {
	rc := newRecordingConn()
	broken := errors.New("broken pipe")
	rc.fail = broken
	synctest.Test(t, func(t *testing.T) {
		h := NewConn(rc, time.Second, 0)
		_, err := h.Write(headersFrame(t, 1, false))
		require.NoError(t, err)
		// Nothing follows: the hold ends and its write fails.
		time.Sleep(For)
		synctest.Wait()
		// The connection works again, but the headers are lost: every
		// later write fails, so HTTP/2 ends the connection.
		rc.mu.Lock()
		rc.fail = nil
		rc.mu.Unlock()
		_, err = h.Write(dataFrame(t, 1, nil, true))
		require.ErrorIs(t, err, broken)
		assert.Empty(t, rc.got())
	})
}

// After a write that failed, which HTTP/2 may follow with the rest of it,
// frame boundaries are unknown: nothing is held any more.
func TestHoldConnStopsHoldingAfterAFailedWrite(t *testing.T) {
	rc := newRecordingConn()
	h := NewConn(rc, time.Second, 0)
	h.hold = time.Hour
	rc.fail = os.ErrDeadlineExceeded
	_, err := h.Write(dataFrame(t, 1, []byte("partial"), false))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	rc.mu.Lock()
	rc.fail = nil
	rc.mu.Unlock()
	headers := headersFrame(t, 3, false)
	_, err = h.Write(headers)
	require.NoError(t, err)
	assert.Equal(t, [][]byte{headers}, rc.got())
}

// The scanner says a write ends with an open header block exactly when
// its last frame completes the header block of a stream that goes on.
func TestFrameScannerReadsHeaderBlocks(t *testing.T) {
	frames := func(write func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		write(http2.NewFramer(&b, nil))
		return b.Bytes()
	}
	headers := func(fr *http2.Framer, endStream, endHeaders bool) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}, EndStream: endStream, EndHeaders: endHeaders})
	}
	for _, tc := range []struct {
		name  string
		bytes []byte
		open  bool
	}{
		{"headers of a stream that goes on", frames(func(fr *http2.Framer) { headers(fr, false, true) }), true},
		{"headers ending the stream", frames(func(fr *http2.Framer) { headers(fr, true, true) }), false},
		{"headers awaiting continuation", frames(func(fr *http2.Framer) { headers(fr, false, false) }), false},
		{"headers completed by continuation", frames(func(fr *http2.Framer) { headers(fr, false, false); fr.WriteContinuation(1, true, []byte{0x87}) }), true},
		{"continuation of headers ending the stream", frames(func(fr *http2.Framer) { headers(fr, true, false); fr.WriteContinuation(1, true, []byte{0x87}) }), false},
		{"open headers, then data", frames(func(fr *http2.Framer) { headers(fr, false, true); fr.WriteData(1, false, []byte("x")) }), false},
		{"data, then open headers", frames(func(fr *http2.Framer) { fr.WriteData(1, false, []byte("x")); headers(fr, false, true) }), true},
		{"settings", frames(func(fr *http2.Framer) { fr.WriteSettings() }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s frameScanner
			assert.Equal(t, tc.open, s.scan(tc.bytes))
		})
	}
}

// Frames cut anywhere across writes are followed all the same.
func TestFrameScannerAcrossWrites(t *testing.T) {
	stream := bytes.Join([][]byte{
		dataFrame(t, 1, bytes.Repeat([]byte("d"), 300), false),
		headersFrame(t, 3, false),
	}, nil)
	for cut := range len(stream) + 1 {
		var s frameScanner
		first := s.scan(stream[:cut])
		last := s.scan(stream[cut:])
		assert.Equal(t, cut == len(stream), first, "cut at %d", cut)
		if cut < len(stream) {
			assert.True(t, last, "cut at %d", cut)
		}
	}
}

// FuzzFrameScanner: scanning bytes in two writes ends where scanning them
// in one does, whatever the bytes and wherever the cut.
func FuzzFrameScanner(f *testing.F) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}, EndHeaders: true})
	fr.WriteData(1, true, []byte("ok"))
	f.Add(b.Bytes(), 5)
	f.Add(b.Bytes(), 9)
	f.Add([]byte{0, 0, 0, 1, 4, 0, 0, 0, 1}, 3)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		if cut < 0 || cut > len(data) {
			return
		}
		var one, two frameScanner
		whole := one.scan(data)
		two.scan(data[:cut])
		split := two.scan(data[cut:])
		if whole != split || one != two {
			t.Fatalf("scanned whole: %v %+v; in two at %d: %v %+v", whole, one, cut, split, two)
		}
	})
}
