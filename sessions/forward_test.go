package sessions_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/moby/spdystream/spdy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/sessions"
)

// forwarding is a port-forward as kubectl and the cluster speak it: the
// client's frames written with the SPDY framer client-go itself uses
// (compressed headers and all), the server's as they come.
type forwarding struct {
	t         *testing.T
	websocket bool
	client    bytes.Buffer // what the client sent, framed
	framer    *spdy.Framer
	spdy      bytes.Buffer // what the framer wrote last
	server    []byte       // what the server sent, framed
}

func newForwarding(t *testing.T, websocket bool) *forwarding {
	f := &forwarding{t: t, websocket: websocket}
	var err error
	f.framer, err = spdy.NewFramer(&f.spdy, nil)
	require.NoError(t, err)
	return f
}

func (f *forwarding) header() http.Header {
	if f.websocket {
		return http.Header{"Upgrade": {"websocket"}, "Sec-Websocket-Protocol": {"SPDY/3.1+portforward.k8s.io"}}
	}
	return http.Header{"Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"portforward.k8s.io"}}
}

// clientFrame frames what the client sends: inside a masked WebSocket
// binary message when the port-forward runs over WebSocket.
func (f *forwarding) clientFrame(frame spdy.Frame) {
	f.spdy.Reset()
	require.NoError(f.t, f.framer.WriteFrame(frame))
	if !f.websocket {
		f.client.Write(f.spdy.Bytes())
		return
	}
	payload := f.spdy.Bytes()
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	b := []byte{0x82, 0x80 | byte(len(payload))}
	if len(payload) >= 126 {
		b = binary.BigEndian.AppendUint16([]byte{0x82, 0x80 | 126}, uint16(len(payload)))
	}
	if len(payload) > 0xffff {
		b = binary.BigEndian.AppendUint64([]byte{0x82, 0x80 | 127}, uint64(len(payload)))
	}
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	f.client.Write(b)
}

// forward opens the two streams client-go's port-forward opens for a
// local connection: an error stream, then a data stream.
func (f *forwarding) forward(request int, errorID, dataID uint32) {
	h := http.Header{}
	h.Set("streamType", "error")
	h.Set("port", "80")
	h.Set("requestID", strconv.Itoa(request))
	f.clientFrame(&spdy.SynStreamFrame{StreamId: spdy.StreamId(errorID), Headers: h.Clone()})
	f.clientFrame(&spdy.DataFrame{StreamId: spdy.StreamId(errorID), Flags: spdy.DataFlagFin})
	h.Set("streamType", "data")
	f.clientFrame(&spdy.SynStreamFrame{StreamId: spdy.StreamId(dataID), Headers: h})
}

// serverFrame frames what the server sends.
func (f *forwarding) serverFrame(frame spdy.Frame) {
	var b bytes.Buffer
	w, err := spdy.NewFramer(&b, nil)
	require.NoError(f.t, err)
	require.NoError(f.t, w.WriteFrame(frame))
	if f.websocket {
		f.server = append(f.server, wsFrame(0x2, b.Bytes())...)
		return
	}
	f.server = append(f.server, b.Bytes()...)
}

// run carries what both sides sent through EndInWords, the server's
// bytes in random pieces and then cut with err, and returns what the
// client read. With onPurpose, the session is ended on purpose once the
// server's bytes are read.
func (f *forwarding) run(onPurpose bool, err error) ([]byte, error) {
	resp := upgraded("/api/v1/namespaces/ns/pods/p/portforward", f.header())
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	resp.Request = resp.Request.WithContext(ctx)
	server := &chunked{b: f.server, r: rand.New(rand.NewPCG(3, 4)), err: err}
	if onPurpose {
		server.atEnd = func() { cancel(endedOnPurpose{}) }
	}
	conn := sessions.EndInWords(resp, server)
	for b := f.client.Bytes(); len(b) > 0; {
		k := min(len(b), 7)
		_, werr := conn.Write(b[:k])
		require.NoError(f.t, werr)
		b = b[k:]
	}
	// The client has gone, as kubectl goes once it has the words: no
	// lingering (TestPortForwardLingersAfterItsWords).
	conn.(closeWriter).CloseWrite()
	defer conn.Close()
	var got []byte
	buf := make([]byte, 5)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		if len(got) > len(f.server) && n == 0 {
			return got, errors.New("no progress")
		}
	}
}

// lastFrames reads the SPDY frames after the server's own bytes,
// unwrapping the WebSocket message they come in.
func (f *forwarding) lastFrames(got []byte) []*spdy.DataFrame {
	f.t.Helper()
	require.True(f.t, bytes.HasPrefix(got, f.server), "the client read what the server sent first")
	last := got[len(f.server):]
	if f.websocket {
		require.GreaterOrEqual(f.t, len(last), 2)
		assert.Equal(f.t, byte(0x82), last[0], "a final binary message")
		last = last[2:]
		if got[len(f.server)+1]&0x7f == 126 {
			last = last[2:]
		}
	}
	r, err := spdy.NewFramer(io.Discard, bytes.NewReader(last))
	require.NoError(f.t, err)
	var frames []*spdy.DataFrame
	for {
		frame, err := r.ReadFrame()
		if err == io.EOF {
			return frames
		}
		require.NoError(f.t, err)
		frames = append(frames, frame.(*spdy.DataFrame))
	}
}

// A port-forward ended on purpose finishes each forwarded connection the
// cluster has not finished — its message on the error stream, then the
// data stream's end — over bare SPDY and over WebSocket alike; a
// connection the cluster already finished is left alone.
func TestPortForwardEndsInWords(t *testing.T) {
	for _, websocket := range []bool{false, true} {
		t.Run(map[bool]string{false: "spdy", true: "websocket"}[websocket], func(t *testing.T) {
			f := newForwarding(t, websocket)
			f.forward(0, 1, 3)
			f.forward(1, 5, 7)
			for _, id := range []uint32{1, 3, 5, 7} {
				f.serverFrame(&spdy.SynReplyFrame{StreamId: spdy.StreamId(id)})
			}
			f.serverFrame(&spdy.DataFrame{StreamId: 3, Data: []byte("HTTP/1.1 200 OK\r\n")})
			// The second connection ended by itself.
			f.serverFrame(&spdy.DataFrame{StreamId: 7, Flags: spdy.DataFlagFin})
			f.serverFrame(&spdy.DataFrame{StreamId: 5, Flags: spdy.DataFlagFin})

			got, err := f.run(true, errLost)
			require.NoError(t, err)
			frames := f.lastFrames(got)
			require.Len(t, frames, 2)
			assert.EqualValues(t, 1, frames[0].StreamId, "the open connection's error stream")
			assert.Equal(t, spdy.DataFlagFin, frames[0].Flags)
			assert.Equal(t, "clusterconnect: you may no longer be erin; the session was ended", string(frames[0].Data))
			assert.EqualValues(t, 3, frames[1].StreamId, "then its data stream")
			assert.Equal(t, spdy.DataFlagFin, frames[1].Flags)
			assert.Empty(t, frames[1].Data)
		})
	}
}

// A port-forward lost for good says so on its open connections, without
// the words an exec's loss ends with.
func TestPortForwardLostEndsInWords(t *testing.T) {
	f := newForwarding(t, true)
	f.forward(0, 1, 3)
	f.serverFrame(&spdy.SynReplyFrame{StreamId: 1})
	got, err := f.run(false, errLost)
	require.NoError(t, err)
	frames := f.lastFrames(got)
	require.Len(t, frames, 2)
	assert.Equal(t, "clusterconnect: the connection to the cluster was lost and could not be resumed (reattach: the session's connection was lost)", string(frames[0].Data))
}

// Where nothing can be said, a port-forward ends as it would without
// EndInWords: no forwarded connection open, the server's bytes ending
// inside a frame (a port-forward's data is never padded), a clean end,
// a stream the client reset.
func TestPortForwardWithoutWords(t *testing.T) {
	for name, tc := range map[string]struct {
		onPurpose bool
		build     func(f *forwarding)
		err       error
	}{
		"no connection": {true, func(f *forwarding) {}, errLost},
		"all finished": {true, func(f *forwarding) {
			f.forward(0, 1, 3)
			f.serverFrame(&spdy.DataFrame{StreamId: 1, Flags: spdy.DataFlagFin})
			f.serverFrame(&spdy.RstStreamFrame{StreamId: 3, Status: spdy.Cancel})
		}, errLost},
		"reset by the client": {true, func(f *forwarding) {
			f.forward(0, 1, 3)
			f.clientFrame(&spdy.RstStreamFrame{StreamId: 1, Status: spdy.Cancel})
			f.clientFrame(&spdy.RstStreamFrame{StreamId: 3, Status: spdy.Cancel})
		}, errLost},
		"mid-frame": {true, func(f *forwarding) {
			f.forward(0, 1, 3)
			f.serverFrame(&spdy.DataFrame{StreamId: 3, Data: bytes.Repeat([]byte{'x'}, 100)})
			f.server = f.server[:len(f.server)-10]
		}, errLost},
		"clean end": {false, func(f *forwarding) { f.forward(0, 1, 3) }, io.EOF},
	} {
		for _, websocket := range []bool{false, true} {
			t.Run(name+map[bool]string{false: "/spdy", true: "/websocket"}[websocket], func(t *testing.T) {
				f := newForwarding(t, websocket)
				tc.build(f)
				got, err := f.run(tc.onPurpose, tc.err)
				assert.Equal(t, f.server, got)
				if tc.err == io.EOF {
					assert.NoError(t, err)
				} else {
					assert.Error(t, err)
				}
			})
		}
	}
}

// After its words a port-forward's connection stays open until the
// client stops sending, at most PortForwardLinger, so that kubectl reads
// them before it sees the connection go; closing it, as a proxy does
// when the request is ended, does not cut that short.
func TestPortForwardLingersAfterItsWords(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newForwarding(t, false)
		f.forward(0, 1, 3)
		resp := upgraded("/api/v1/namespaces/ns/pods/p/portforward", f.header())
		conn := sessions.EndInWords(resp, &chunked{b: f.server, r: rand.New(rand.NewPCG(1, 1)), err: errLost})
		_, err := conn.Write(f.client.Bytes())
		require.NoError(t, err)
		conn.Close()
		start := time.Now()
		got, err := io.ReadAll(conn)
		require.NoError(t, err)
		assert.NotEmpty(t, f.lastFrames(got))
		assert.Equal(t, sessions.PortForwardLinger, time.Since(start), "the client still there: the whole linger")

		conn = sessions.EndInWords(resp, &chunked{b: f.server, r: rand.New(rand.NewPCG(1, 1)), err: errLost})
		_, err = conn.Write(f.client.Bytes())
		require.NoError(t, err)
		start = time.Now()
		var wg sync.WaitGroup
		wg.Go(func() {
			time.Sleep(300 * time.Millisecond)
			conn.(closeWriter).CloseWrite()
		})
		_, err = io.ReadAll(conn)
		require.NoError(t, err)
		assert.Equal(t, 300*time.Millisecond, time.Since(start), "ends when the client stops sending")
		wg.Wait()
	})
}

// What a client can make the tracker hold is bounded: past 1,024 open
// streams, or with a header block out of bounds (a zlib bomb of a
// header, say), it stops following the port-forward, which then ends
// without words; the bytes go through unchanged all the same.
func TestPortForwardTrackingIsBounded(t *testing.T) {
	f := newForwarding(t, false)
	for i := range 600 {
		f.forward(i, uint32(4*i+1), uint32(4*i+3))
	}
	got, err := f.run(true, errLost)
	assert.Equal(t, f.server, got)
	assert.Error(t, err, "1,200 streams: no words")

	f = newForwarding(t, false)
	h := http.Header{"Streamtype": {"error"}, "X-Big": {string(bytes.Repeat([]byte{'a'}, 1<<20))}}
	f.clientFrame(&spdy.SynStreamFrame{StreamId: 1, Headers: h})
	f.forward(0, 3, 5)
	got, err = f.run(true, errLost)
	assert.Equal(t, f.server, got)
	assert.Error(t, err, "a 1 MiB header: no words")
}

// FuzzPortForward: whatever either side sends, however split, the client
// reads exactly what the server sent, then either the error or last
// words made of whole SPDY data frames.
func FuzzPortForward(f *testing.F) {
	seed := newForwarding(&testing.T{}, false)
	seed.forward(0, 1, 3)
	f.Add(seed.client.Bytes(), []byte{}, uint64(1), false)
	ws := newForwarding(&testing.T{}, true)
	ws.forward(0, 1, 3)
	f.Add(ws.client.Bytes(), wsFrame(0x2, spdyData(3, 0, []byte("hi"))), uint64(2), true)
	f.Add([]byte{0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff}, []byte{0x80, 0x03, 0x00, 0x02, 0x01, 0x00, 0x00, 0x04, 0, 0, 0, 1}, uint64(3), false)
	f.Fuzz(func(t *testing.T, client, server []byte, seed uint64, websocket bool) {
		h := http.Header{"Upgrade": {"SPDY/3.1"}, "X-Stream-Protocol-Version": {"portforward.k8s.io"}}
		if websocket {
			h = http.Header{"Upgrade": {"websocket"}, "Sec-Websocket-Protocol": {"SPDY/3.1+portforward.k8s.io"}}
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		resp := upgraded("/api/v1/namespaces/ns/pods/p/portforward", h)
		resp.Request = resp.Request.WithContext(ctx)
		r := rand.New(rand.NewPCG(seed, seed))
		conn := sessions.EndInWords(resp, &chunked{b: server, r: r, err: errLost, atEnd: func() { cancel(endedOnPurpose{}) }})
		for b := client; len(b) > 0; {
			k := 1 + r.IntN(len(b))
			conn.Write(b[:k])
			b = b[k:]
		}
		conn.(closeWriter).CloseWrite()
		got, err := io.ReadAll(conn)
		if !bytes.HasPrefix(got, server) {
			t.Fatalf("read %d bytes that are not what the server sent", len(got))
		}
		if err == nil && len(got) == len(server) {
			t.Fatal("neither the error nor a last message")
		}
	})
}

type closeWriter interface{ CloseWrite() error }

// discard is an upgraded connection that takes every write and reads what
// it is given, again and again.
type discard struct{ r []byte }

func (d *discard) Read(p []byte) (int, error)  { return copy(p, d.r), nil }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) Close() error                { return nil }

// BenchmarkPortForward is what following a port-forward costs per MiB
// each way, over WebSocket (the client's frames masked): the bytes of
// 16 KiB data frames, each in a WebSocket message of its own, read or
// written 32 KiB at a time; "bare" is the same copy without EndInWords.
func BenchmarkPortForward(b *testing.B) {
	f := newForwarding(&testing.T{}, true)
	f.forward(0, 1, 3)
	var server, client []byte
	for range 2 {
		var s bytes.Buffer
		w, _ := spdy.NewFramer(&s, nil)
		w.WriteFrame(&spdy.DataFrame{StreamId: 3, Data: bytes.Repeat([]byte{'d'}, 16<<10-16)})
		server = append(server, wsFrame(0x2, s.Bytes())...)
	}
	server = server[:32<<10]
	for len(client) < 32<<10 {
		f.client.Reset()
		f.clientFrame(&spdy.DataFrame{StreamId: 3, Data: bytes.Repeat([]byte{'u'}, 16<<10-16)})
		client = append(client, f.client.Bytes()...)
	}
	client = client[:32<<10]
	// What a port-forward's tracker allocates up to its first forwarded
	// connection's streams (the client's zlib stream: a 32 KiB window).
	b.Run("first-connection", func(b *testing.B) {
		first := newForwarding(&testing.T{}, true)
		first.forward(0, 1, 3)
		opened := first.client.Bytes()
		for b.Loop() {
			conn := sessions.EndInWords(upgraded("/api/v1/namespaces/ns/pods/p/portforward", f.header()), &discard{})
			conn.Write(opened)
		}
	})
	for _, tracked := range []bool{false, true} {
		name := map[bool]string{false: "bare", true: "tracked"}[tracked]
		var conn io.ReadWriteCloser = &discard{r: server}
		if tracked {
			conn = sessions.EndInWords(upgraded("/api/v1/namespaces/ns/pods/p/portforward", f.header()), conn)
		}
		b.Run("download/"+name, func(b *testing.B) {
			buf := make([]byte, 32<<10)
			b.SetBytes(1 << 20)
			for b.Loop() {
				for range 32 {
					conn.Read(buf)
				}
			}
		})
		b.Run("upload/"+name, func(b *testing.B) {
			b.SetBytes(1 << 20)
			for b.Loop() {
				for range 32 {
					conn.Write(client)
				}
			}
		})
	}
}
