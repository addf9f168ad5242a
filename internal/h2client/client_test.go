package h2client

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// fakeAgent is the agent's side of one tunnel connection, frame by frame,
// so that a test decides exactly what the relay's client is sent.
type fakeAgent struct {
	t    testing.TB
	conn net.Conn
	fr   *http2.Framer
	wmu  sync.Mutex
	hbuf bytes.Buffer
	henc *hpack.Encoder
	// frames is what the relay sent, HEADERS decoded, DATA copied.
	frames chan http2.Frame
}

func testH2Config(initial, limit int32, budget int64) *Config {
	b := &windowBudget{total: budget}
	b.avail.Store(budget)
	return &Config{
		initialWindow: initial, windowLimit: limit, windowShare: limit, budget: b, maxHeaderList: 16 << 10,
		pingInterval: time.Hour, pingTimeout: time.Hour, busyAfter: time.Hour, busyTimeout: time.Hour, writeTimeout: 10 * time.Second,
		// Long against the test's pace: a reader that reads at all keeps
		// up; TestStreamWindowNeedsAReaderFasterThanItsWindow sets it short.
		fixedRTT: time.Second,
	}
}

// newFakeAgent connects a relay's client to a fake agent over a Unix
// socket (a fuzz run opens thousands: TCP would run out of ports) and
// completes the SETTINGS exchange, the agent sending settings.
func newFakeAgent(t testing.TB, cfg *Config, settings ...http2.Setting) (*Conn, *fakeAgent) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "agent"))
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	relaySide, err := net.Dial("unix", ln.Addr().String())
	require.NoError(t, err)
	agentSide := <-accepted
	require.NotNil(t, agentSide)

	a := &fakeAgent{t: t, conn: agentSide, frames: make(chan http2.Frame, 1024)}
	a.fr = http2.NewFramer(agentSide, agentSide)
	a.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	a.henc = hpack.NewEncoder(&a.hbuf)
	require.NoError(t, a.fr.WriteSettings(settings...))

	cc, err := New(cfg, relaySide)
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close(); agentSide.Close() })

	preface := make([]byte, len(http2.ClientPreface))
	_, err = io.ReadFull(agentSide, preface)
	require.NoError(t, err)
	require.Equal(t, http2.ClientPreface, string(preface))
	go a.readLoop()
	// The relay has taken the agent's settings once it acknowledges them.
	a.next(func(f http2.Frame) bool { _, ok := f.(*settingsAck); return ok })
	return cc, a
}

// clientAndAgent is one relay's client with its fake agent.
type clientAndAgent struct {
	cc *Conn
	a  *fakeAgent
}

// newFakeAgents connects n clients, each to a fake agent of its own that
// sends settings.
func newFakeAgents(t testing.TB, n int, settings ...http2.Setting) []clientAndAgent {
	out := make([]clientAndAgent, n)
	for i := range out {
		out[i].cc, out[i].a = newFakeAgent(t, testH2Config(64<<10, 64<<10, 0), settings...)
	}
	return out
}

func (a *fakeAgent) readLoop() {
	defer close(a.frames)
	for {
		f, err := a.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			a.frames <- &dataCopy{id: f.StreamID, data: bytes.Clone(f.Data()), end: f.StreamEnded()}
			continue
		case *http2.SettingsFrame:
			if !f.IsAck() {
				a.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				a.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
			}
		}
		if _, ok := f.(*http2.MetaHeadersFrame); ok {
			a.frames <- f
			continue
		}
		a.frames <- copyFrame(f)
	}
}

// dataCopy is a DATA frame the relay sent, kept past the next read.
type dataCopy struct {
	http2.FrameHeader
	id   uint32
	data []byte
	end  bool
}

// copyFrame keeps what the tests look at of frames the Framer reuses.
func copyFrame(f http2.Frame) http2.Frame {
	switch f := f.(type) {
	case *http2.WindowUpdateFrame:
		c := *f
		return &c
	case *http2.RSTStreamFrame:
		c := *f
		return &c
	case *http2.GoAwayFrame:
		c := *f
		return &c
	case *http2.SettingsFrame:
		if f.IsAck() {
			return &settingsAck{}
		}
	}
	return &otherFrame{} // not looked at
}

type (
	settingsAck struct{ http2.FrameHeader }
	otherFrame  struct{ http2.FrameHeader }
)

func (a *fakeAgent) write(fn func(fr *http2.Framer) error) {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	fn(a.fr)
}

// next returns the next frame of the relay's for which keep is true.
func (a *fakeAgent) next(keep func(http2.Frame) bool) http2.Frame {
	a.t.Helper()
	for f := range a.frames {
		if keep(f) {
			return f
		}
	}
	a.t.Fatal("the relay's client closed the connection")
	return nil
}

// request waits for the relay's next request and returns its stream.
func (a *fakeAgent) request() *http2.MetaHeadersFrame {
	a.t.Helper()
	return a.next(func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }).(*http2.MetaHeadersFrame)
}

// answer sends response headers on a stream.
func (a *fakeAgent) answer(id uint32, end bool, fields ...string) {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	a.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		a.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	require.NoError(a.t, a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: a.hbuf.Bytes(), EndHeaders: true, EndStream: end}))
}

// rawData writes a DATA frame without the agent's Framer, which would
// keep a buffer the frame's size.
func (a *fakeAgent) rawData(id uint32, p []byte, end bool) {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	var flags byte
	if end {
		flags = 0x1
	}
	n := len(p)
	frame := append([]byte{byte(n >> 16), byte(n >> 8), byte(n), 0x0, flags, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}, p...)
	_, err := a.conn.Write(frame)
	require.NoError(a.t, err)
}

func (a *fakeAgent) data(id uint32, p []byte, end bool) {
	a.write(func(fr *http2.Framer) error { return fr.WriteData(id, end, p) })
}

// windowUpdate returns the next WINDOW_UPDATE for stream id, or false
// when none comes within wait (the relay grants nothing more).
func (a *fakeAgent) windowUpdate(id uint32, wait time.Duration) (uint32, bool) {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case f, ok := <-a.frames:
			if !ok {
				return 0, false
			}
			if wu, ok := f.(*http2.WindowUpdateFrame); ok && wu.StreamID == id {
				return wu.Increment, true
			}
		case <-t.C:
			return 0, false
		}
	}
}

// windowLimited plays an agent with an endless body that sends all the
// window it has the moment it has it, so that the window alone paces it,
// until the reader is done and the relay grants no more. sent and granted
// carry over from one call to the next.
func (a *fakeAgent) windowLimited(id uint32, sent, granted *int64, readerDone <-chan error) error {
	chunk := make([]byte, 16<<10)
	var readErr error
	done := false
	for {
		for *sent < *granted {
			n := min(int64(len(chunk)), *granted-*sent)
			a.data(id, chunk[:n], false)
			*sent += n
		}
		inc, ok := a.windowUpdate(id, 300*time.Millisecond)
		if ok {
			*granted += int64(inc)
			continue
		}
		if !done {
			select {
			case readErr = <-readerDone:
				done = true
			default:
			}
			continue
		}
		return readErr
	}
}

// send sends a GET for path in a goroutine; the channel gets its answer.
func send(t testing.TB, cc *Conn, path string) <-chan *http.Response {
	got := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "https://cluster"+path, nil)
		resp, err := cc.RoundTrip(req)
		assert.NoError(t, err)
		got <- resp
	}()
	return got
}

// fetch sends a GET and reads its whole answer in a goroutine; the
// channel gets the error, if any.
func fetch(cc *Conn) <-chan error {
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "https://cluster/x", nil)
		resp, err := cc.RoundTrip(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		errc <- err
	}()
	return errc
}

// readThenStop reads n bytes of body in a goroutine and then reads no
// more.
func readThenStop(body io.Reader, n int64) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, body, n)
		done <- err
	}()
	return done
}

// get sends a GET and has the agent answer 200 with a body to come.
func (a *fakeAgent) get(cc *Conn) (uint32, *http.Response) {
	a.t.Helper()
	got := send(a.t, cc, "/big")
	id := a.request().StreamID
	a.answer(id, false, ":status", "200")
	resp := <-got
	require.NotNil(a.t, resp)
	return id, resp
}

// The receive window of an answer whose reader keeps up with the agent
// grows to the limit, and no further: what a reader that then stops can
// make the relay hold.
func TestStreamWindowGrowsWhileTheReaderKeepsUp(t *testing.T) {
	const initial, limit, budget = 64 << 10, 1 << 20, 64 << 20
	cfg := testH2Config(initial, limit, budget)
	cc, a := newFakeAgent(t, cfg)
	id, resp := a.get(cc)

	const read = 32 << 20
	var sent, granted int64 = 0, initial
	require.NoError(t, a.windowLimited(id, &sent, &granted, readThenStop(resp.Body, read)))
	// The last quarter of a window read goes back only with the next.
	held := sent - read
	assert.Greater(t, held, int64(limit*3/4), "the window grew to the limit while the reader kept up")
	assert.LessOrEqual(t, held, int64(limit), "and no further")
	assert.LessOrEqual(t, cfg.budget.avail.Load(), budget-(held-initial), "what the stream holds over its initial window is taken from the budget")

	resp.Body.Close()
	rst := a.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	assert.Equal(t, http2.ErrCodeCancel, rst.ErrCode)
	assert.EqualValues(t, budget, cfg.budget.avail.Load(), "the stream gave its share of the budget back")
}

// heldAfterReadingFast has the agent answer a GET whose reader takes
// 8 MiB as fast as the window lets it come and then stops, and returns
// what the answer's window then holds: how far it grew. The answer stays
// open until the test ends.
func (a *fakeAgent) heldAfterReadingFast(cc *Conn, initial int64) int64 {
	a.t.Helper()
	id, resp := a.get(cc)
	a.t.Cleanup(func() { resp.Body.Close() })
	const read = 8 << 20
	var sent, granted int64 = 0, initial
	require.NoError(a.t, a.windowLimited(id, &sent, &granted, readThenStop(resp.Body, read)))
	return sent - read
}

// A window never grows past the relay's budget: a reader that read fast
// and stopped holds at most its initial window and the budget.
func TestStreamWindowsShareOneBudget(t *testing.T) {
	const initial, limit, budget = 64 << 10, 1 << 20, 192 << 10
	cfg := testH2Config(initial, limit, budget)
	cc, a := newFakeAgent(t, cfg)

	var held [2]int64
	for i := range held {
		held[i] = a.heldAfterReadingFast(cc, initial)
	}
	assert.Greater(t, held[0], int64((initial+budget)*3/4), "the first stream grew by the whole budget")
	assert.LessOrEqual(t, held[0], int64(initial+budget))
	assert.LessOrEqual(t, held[1], int64(initial), "the second found it spent and kept its initial window")
	assert.Zero(t, cfg.budget.avail.Load())
}

// Past its share a window grows only out of the budget's first half: a
// fast reader alone on the relay gets a window larger than the share,
// and those after it still grow to theirs.
func TestLargeWindowsLeaveHalfTheBudgetToShares(t *testing.T) {
	const initial, share, limit, budget = 64 << 10, 256 << 10, 1 << 20, 1 << 20
	cfg := testH2Config(initial, limit, budget)
	cfg.windowShare = share
	cc, a := newFakeAgent(t, cfg)

	var held [3]int64
	for i := range held {
		held[i] = a.heldAfterReadingFast(cc, initial)
		if i == 0 {
			assert.Greater(t, held[0], int64(share), "the first grew past its share")
			assert.GreaterOrEqual(t, cfg.budget.avail.Load(), int64(budget/2), "and left half the budget")
		}
	}
	for _, h := range held[1:] {
		assert.Greater(t, h, int64(share*3/4), "those after it grew to their share")
		assert.LessOrEqual(t, h, int64(share), "and no further, the budget's first half spent")
	}
}

// A window grows only for a reader that takes half a window in less than
// two round trips to the agent; one that is slower than that is not held
// back by its window.
func TestStreamWindowNeedsAReaderFasterThanItsWindow(t *testing.T) {
	const initial, limit, budget = 64 << 10, 1 << 20, 64 << 20
	cfg := testH2Config(initial, limit, budget)
	cfg.fixedRTT = time.Nanosecond
	cc, a := newFakeAgent(t, cfg)
	id, resp := a.get(cc)
	defer resp.Body.Close()
	const read = 8 << 20
	var sent, granted int64 = 0, initial
	require.NoError(t, a.windowLimited(id, &sent, &granted, readThenStop(resp.Body, read)))
	assert.LessOrEqual(t, sent-read, int64(initial))
	assert.EqualValues(t, budget, cfg.budget.avail.Load())
}

// The relay measures its round trip to the agent, which windows are tuned
// by, from the SETTINGS exchange on.
func TestTunnelClientMeasuresTheRoundTrip(t *testing.T) {
	cfg := testH2Config(64<<10, 1<<20, 0)
	cfg.fixedRTT = 0
	cc, _ := newFakeAgent(t, cfg)
	// The agent's acknowledgement of the relay's SETTINGS is the first
	// sample.
	require.Eventually(t, func() bool { d, _ := cc.roundTrip.Get(time.Now()); return d > 0 }, 10*time.Second, time.Millisecond)
	assert.Less(t, cc.rtt(time.Now()), time.Minute)
}

// An agent that sends past a stream's window loses that stream, not the
// connection: the relay resets it and answers others.
func TestAgentSendingPastTheWindowLosesTheStream(t *testing.T) {
	cc, a := newFakeAgent(t, testH2Config(64<<10, 64<<10, 0))
	got := send(t, cc, "/x")
	id := a.request().StreamID
	a.answer(id, false, ":status", "200")
	resp := <-got
	for range 5 { // 80 KiB against 64 KiB
		a.data(id, make([]byte, 16<<10), false)
	}
	rst := a.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	assert.Equal(t, id, rst.StreamID)
	assert.Equal(t, http2.ErrCodeFlowControl, rst.ErrCode)
	_, err := io.ReadAll(resp.Body)
	assert.ErrorContains(t, err, "past the stream's window")
	resp.Body.Close()

	done := send(t, cc, "/y")
	id = a.request().StreamID
	a.answer(id, false, ":status", "200", "content-length", "2")
	a.data(id, []byte("ok"), true)
	resp = <-done
	require.NotNil(t, resp)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "ok", string(b))
}

// What breaks HTTP/2 itself ends the connection with GOAWAY, failing the
// requests in flight; what breaks one answer fails that answer.
func TestAgentBreakingTheProtocol(t *testing.T) {
	tests := []struct {
		name    string
		agent   func(a *fakeAgent, id uint32)
		wantErr string
		goAway  bool
	}{
		{"data on a stream never opened", func(a *fakeAgent, id uint32) { a.data(id+2, []byte("x"), false) }, "never opened", true},
		{"a pushed stream", func(a *fakeAgent, id uint32) {
			a.write(func(fr *http2.Framer) error {
				return fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
			})
		}, "pushed", true},
		{"status not a number", func(a *fakeAgent, id uint32) { a.answer(id, false, ":status", "2x0") }, "status", false},
		{"two Content-Lengths", func(a *fakeAgent, id uint32) {
			a.answer(id, false, ":status", "200", "content-length", "1", "content-length", "2")
		}, "more than one Content-Length", false},
		{"headers over the relay's limit", func(a *fakeAgent, id uint32) {
			a.answer(id, false, ":status", "200", "x-big", strings.Repeat("x", 10<<10), "x-bigger", strings.Repeat("y", 10<<10))
		}, "bytes of headers", false},
		{"101 in HTTP/2", func(a *fakeAgent, id uint32) { a.answer(id, false, ":status", "101") }, "101", false},
		{"a padded DATA frame with no pad length", func(a *fakeAgent, id uint32) {
			a.answer(id, false, ":status", "200")
			a.wmu.Lock()
			defer a.wmu.Unlock()
			a.conn.Write([]byte{0, 0, 0, 0x0, 0x8, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)})
		}, "no pad length", true},
		{"a padded DATA frame padded past its length", func(a *fakeAgent, id uint32) {
			a.answer(id, false, ":status", "200")
			a.wmu.Lock()
			defer a.wmu.Unlock()
			a.conn.Write([]byte{0, 0, 3, 0x0, 0x8, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id), 200, 'x', 'y'})
		}, "padded a DATA frame past its length", true},
		{"endless 1xx", func(a *fakeAgent, id uint32) {
			for range 6 {
				a.answer(id, false, ":status", "103")
			}
		}, "informational", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, a := newFakeAgent(t, testH2Config(64<<10, 64<<10, 0))
			errc := fetch(cc)
			id := a.request().StreamID
			tt.agent(a, id)
			err := <-errc
			require.Error(t, err)
			assert.ErrorContains(t, err, tt.wantErr)
			if tt.goAway {
				ga := a.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
				assert.Equal(t, http2.ErrCodeProtocol, ga.ErrCode)
				assert.False(t, cc.ReserveNewRequest(), "the connection is gone")
			} else {
				assert.True(t, cc.ReserveNewRequest(), "the connection serves on")
			}
		})
	}
}

// Large DATA frames, which the read loop reads straight into the stream's
// buffer, arrive whole and in order whatever their size and padding, and
// their window comes back as the reader takes them.
func TestLargeDataFramesArriveWhole(t *testing.T) {
	cc, a := newFakeAgent(t, testH2Config(1<<20, 1<<20, 0))
	got := send(t, cc, "/large")
	id := a.request().StreamID
	// Whole pieces, tails kept as pieces (15 KiB and more) and tails
	// copied, the largest frame the relay takes, with padding and without.
	sizes := []int{16 << 10, 16<<10 + 1, 20000, DataFrameSize, 3, 32 << 10, 16<<10 + 15900, DataFrameSize - 300, 15<<10 - 1, 15 << 10}
	pads := []int{0, 0, 255, 0, 0, 1, 0, 255, 0, 3}
	var want []byte
	for i, n := range sizes {
		for j := range n {
			want = append(want, byte(i*31+j))
		}
	}
	a.answer(id, false, ":status", "200", "content-length", strconv.Itoa(len(want)))
	resp := <-got
	require.NotNil(t, resp)
	rest := want
	for i, n := range sizes {
		p := rest[:n]
		rest = rest[n:]
		end := len(rest) == 0
		if pads[i] > 0 {
			a.write(func(fr *http2.Framer) error { return fr.WriteDataPadded(id, end, p, make([]byte, pads[i])) })
		} else {
			a.data(id, p, end)
		}
	}
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, body), "the body arrived changed")
	resp.Body.Close()
}

// What an agent's DATA makes a stream's buffer hold is at most twice its
// bytes and one piece, whatever the frames' sizes (whole 16 KiB pieces
// are read straight into pieces of their own; a frame's tail is copied
// into the room there is, or, nearly a piece long, kept as read); frames
// of DataFrameSize waste almost nothing.
func TestStreamBufferRoom(t *testing.T) {
	for _, frame := range []int{16<<10 + 4097, 16<<10 + 8000, DataFrameSize, 3000, 1} {
		cc, a := newFakeAgent(t, testH2Config(1<<20, 1<<20, 0))
		got := send(t, cc, "/x")
		id := a.request().StreamID
		a.answer(id, false, ":status", "200")
		resp := <-got
		require.NotNil(t, resp)
		n := min(12, (512<<10)/frame)
		for range n {
			a.data(id, make([]byte, frame), false)
		}
		// The relay acknowledges SETTINGS once it has read every frame
		// sent before them.
		a.write(func(fr *http2.Framer) error { return fr.WriteSettings() })
		a.next(func(f http2.Frame) bool { _, ok := f.(*settingsAck); return ok })
		cc.mu.Lock()
		s := cc.streams[id]
		cc.mu.Unlock()
		s.mu.Lock()
		held, room := s.buf.len, 0
		for _, p := range s.buf.parts {
			room += cap(p)
		}
		s.mu.Unlock()
		require.Equal(t, n*frame, held)
		assert.LessOrEqual(t, room, 2*held+dataPiece, "%d frames of %d bytes", n, frame)
		if frame == DataFrameSize {
			assert.LessOrEqual(t, room, held+held/1000, "frames of whole records waste almost nothing")
		}
		t.Logf("%d frames of %d bytes: %d bytes held in %d of room", n, frame, held, room)
		resp.Body.Close()
	}
}

// A connection that carried a download keeps nothing the size of its
// frames afterwards: DATA is read into the stream's pooled buffer, not
// through the Framer's own buffer, which keeps the size of the largest
// frame it has read for the connection's life (64 KiB on each of
// thousands of agent connections).
func TestConnectionKeepsNoFrameBufferAfterADownload(t *testing.T) {
	const conns = 100
	ps := newFakeAgents(t, conns)
	before := heapInUse()
	for _, p := range ps {
		got := send(t, p.cc, "/x")
		id := p.a.request().StreamID
		p.a.answer(id, false, ":status", "200")
		resp := <-got
		require.NotNil(t, resp)
		p.a.rawData(id, make([]byte, maxFrameRead), true)
		n, err := io.Copy(io.Discard, resp.Body)
		require.NoError(t, err)
		require.EqualValues(t, maxFrameRead, n)
		resp.Body.Close()
	}
	after := heapInUse()
	per := int64(after-before) / conns
	t.Logf("heap per connection after a download: %d bytes", per)
	assert.Less(t, per, int64(maxFrameRead/4))
}

// Nor does a connection that carried an upload keep a buffer the size of
// the request's body pieces: DATA is written from pooled buffers. (The
// fake agent reads through its Framer, which keeps a buffer as large as
// the largest frame it read: one 32 KiB piece per connection, which the
// bound allows for.)
func TestConnectionKeepsNoFrameBufferAfterAnUpload(t *testing.T) {
	const conns = 100
	ps := newFakeAgents(t, conns, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	before := heapInUse()
	for _, p := range ps {
		got := make(chan *http.Response, 1)
		go func() {
			// 60 KiB: within the connection's first window.
			req, _ := http.NewRequest(http.MethodPost, "https://cluster/upload", bytes.NewReader(make([]byte, 60<<10)))
			resp, err := p.cc.RoundTrip(req)
			assert.NoError(t, err)
			got <- resp
		}()
		id := p.a.request().StreamID
		for n := 0; n < 60<<10; {
			f := p.a.next(func(f http2.Frame) bool { _, ok := f.(*dataCopy); return ok }).(*dataCopy)
			n += len(f.data)
		}
		p.a.answer(id, true, ":status", "204")
		resp := <-got
		require.NotNil(t, resp)
		resp.Body.Close()
	}
	per := int64(heapInUse()-before) / conns
	t.Logf("heap per connection after an upload: %d bytes", per)
	assert.Less(t, per, int64(48<<10))
}

// An upload's DATA frames, header included, fill whole TLS records but
// the last (a frame one record and nine bytes long is two records and two
// system calls), whatever frame size the agent allows.
func TestUploadFramesFillWholeTLSRecords(t *testing.T) {
	for _, maxFrame := range []uint32{16 << 10, 20000, 1 << 20} {
		cc, a := newFakeAgent(t, testH2Config(64<<10, 64<<10, 0), http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrame}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		const size = 60 << 10 // within the connection's first window
		got := make(chan *http.Response, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodPost, "https://cluster/upload", bytes.NewReader(make([]byte, size)))
			resp, err := cc.RoundTrip(req)
			assert.NoError(t, err)
			got <- resp
		}()
		id := a.request().StreamID
		var frames []int
		for n := 0; n < size; {
			f := a.next(func(f http2.Frame) bool { _, ok := f.(*dataCopy); return ok }).(*dataCopy)
			n += len(f.data)
			frames = append(frames, len(f.data))
		}
		a.answer(id, true, ":status", "204")
		resp := <-got
		require.NotNil(t, resp)
		resp.Body.Close()
		for _, n := range frames[:len(frames)-1] {
			assert.Zero(t, (n+9)%TLSRecord, "frames with the agent's limit at %d bytes: %v", maxFrame, frames)
			assert.LessOrEqual(t, n, int(maxFrame))
		}
	}
}

// A request with a large header list leaves no large buffer behind
// either: the connection's header block buffer is let go, and the block
// goes in frames of at most 16 KiB.
func TestLargeHeadersLeaveNoLargeBuffer(t *testing.T) {
	cc, a := newFakeAgent(t, testH2Config(64<<10, 64<<10, 0), http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
	got := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "https://cluster/x", nil)
		big := make([]byte, 40<<10)
		for i := range big {
			big[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[(i*7+i/36)%36]
		}
		req.Header.Set("X-Big", string(big))
		resp, err := cc.RoundTrip(req)
		assert.NoError(t, err)
		got <- resp
	}()
	h := a.request()
	assert.Len(t, fieldValue(h, "x-big"), 40<<10)
	assert.LessOrEqual(t, int(h.Length), maxFrameWrite, "the block's first frame, though the agent takes 1 MiB ones")
	a.answer(h.StreamID, true, ":status", "204")
	require.NotNil(t, <-got)
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	assert.LessOrEqual(t, cc.hbuf.Cap(), maxFrameWrite)
}

// An answer must have the length it declares.
func TestAnswerLengthMustMatchContentLength(t *testing.T) {
	for _, tt := range []struct {
		name string
		body string
		want error
	}{
		{"short", "abc", io.ErrUnexpectedEOF},
		{"long", "abcdefgh", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cc, a := newFakeAgent(t, testH2Config(64<<10, 64<<10, 0))
			errc := fetch(cc)
			id := a.request().StreamID
			a.answer(id, false, ":status", "200", "content-length", "5")
			a.data(id, []byte(tt.body), true)
			err := <-errc
			require.Error(t, err)
			if tt.want != nil {
				assert.True(t, errors.Is(err, tt.want), "%v", err)
			} else {
				assert.ErrorContains(t, err, "more than its Content-Length")
			}
		})
	}
}

// A 304 may carry the Content-Length of a body it does not have.
func TestNotModifiedKeepsItsContentLength(t *testing.T) {
	cc, a := newFakeAgent(t, testH2Config(64<<10, 64<<10, 0))
	got := send(t, cc, "/x")
	id := a.request().StreamID
	a.answer(id, false, ":status", "304", "content-length", "100")
	a.data(id, nil, true)
	resp := <-got
	require.NotNil(t, resp)
	b, err := io.ReadAll(resp.Body)
	assert.NoError(t, err)
	assert.Empty(t, b)
	assert.EqualValues(t, 100, resp.ContentLength)
}

// An answer's header names reach the caller canonical, common or not,
// and again on the connection's next answer.
func TestAnswerHeaderNamesAreCanonical(t *testing.T) {
	cc, a := newFakeAgent(t, testH2Config(64<<10, 64<<10, 0))
	for range 2 {
		got := send(t, cc, "/x")
		id := a.request().StreamID
		a.answer(id, true, ":status", "200", "content-type", "text/plain", "x-kubernetes-pf-flowschema-uid", "f", "x-uncommon-name", "u", "x-uncommon-name", "v")
		resp := <-got
		require.NotNil(t, resp)
		assert.Equal(t, http.Header{"Content-Type": {"text/plain"}, "X-Kubernetes-Pf-Flowschema-Uid": {"f"}, "X-Uncommon-Name": {"u", "v"}}, resp.Header)
	}
}

// A request's body goes in DATA frames within the agent's windows, and its
// trailers after it.
func TestRequestBodyAndTrailers(t *testing.T) {
	cc, a := newFakeAgent(t, testH2Config(64<<10, 64<<10, 0), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	body := strings.Repeat("b", 2500)
	got := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, "https://cluster/upload", io.NopCloser(strings.NewReader(body)))
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Checksum": nil}
		req.Trailer.Set("X-Checksum", "abc")
		resp, err := cc.RoundTrip(req)
		assert.NoError(t, err)
		got <- resp
	}()
	h := a.request()
	assert.Equal(t, "x-checksum", fieldValue(h, "trailer"))
	var received []byte
	granted := 1000
	for len(received) < len(body) {
		f := a.next(func(f http2.Frame) bool { _, ok := f.(*dataCopy); return ok }).(*dataCopy)
		if f.id != h.StreamID {
			continue
		}
		received = append(received, f.data...)
		require.LessOrEqual(t, len(received), granted, "the relay kept within the agent's window")
		if len(received) == granted {
			a.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(h.StreamID, 1000) })
			a.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 1000) })
			granted += 1000
		}
	}
	assert.Equal(t, body, string(received))
	tr := a.request()
	assert.Equal(t, h.StreamID, tr.StreamID)
	assert.True(t, tr.StreamEnded())
	assert.Equal(t, "abc", fieldValue(tr, "x-checksum"))
	a.answer(h.StreamID, true, ":status", "204")
	resp := <-got
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
}

func fieldValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.Fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// agentFrames encodes frames as an agent would send them after the
// relay's first request (stream 1), for the fuzz seeds.
func agentFrames(write func(fr *http2.Framer, enc func(fields ...string) []byte)) []byte {
	var b, hb bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	henc := hpack.NewEncoder(&hb)
	enc := func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	}
	write(fr, enc)
	return b.Bytes()
}

// Whatever an agent sends, the relay's client neither panics nor hangs:
// the request ends, with an answer or an error, once the connection does,
// and the stream and its share of the window budget are given back.
func FuzzTunnelClientAgentFrames(f *testing.F) {
	headers := func(fr *http2.Framer, block []byte, end bool) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true, EndStream: end})
	}
	for _, seed := range []func(fr *http2.Framer, enc func(...string) []byte){
		func(fr *http2.Framer, enc func(...string) []byte) {
			headers(fr, enc(":status", "200", "content-length", "2"), false)
			fr.WriteData(1, true, []byte("ok"))
		},
		func(fr *http2.Framer, enc func(...string) []byte) {
			headers(fr, enc(":status", "200", "trailer", "x-sum"), false)
			fr.WriteDataPadded(1, false, []byte("body"), make([]byte, 7))
			headers(fr, enc("x-sum", "1"), true)
		},
		func(fr *http2.Framer, enc func(...string) []byte) {
			headers(fr, enc(":status", "103", "link", "</a>"), false)
			block := enc(":status", "204", "x-long", strings.Repeat("v", 100))
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:10], EndStream: true})
			fr.WriteContinuation(1, true, block[10:])
		},
		func(fr *http2.Framer, enc func(...string) []byte) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
			fr.WriteWindowUpdate(0, 1000)
			fr.WritePing(false, [8]byte{1})
			headers(fr, enc(":status", "200"), false)
			fr.WriteData(1, false, make([]byte, 1000))
			fr.WriteRSTStream(1, http2.ErrCodeInternal)
		},
		func(fr *http2.Framer, enc func(...string) []byte) {
			headers(fr, enc(":status", "200"), false)
			fr.WriteGoAway(1, http2.ErrCodeNo, []byte("bye"))
			fr.WriteData(1, true, []byte("last"))
		},
		func(fr *http2.Framer, enc func(...string) []byte) {
			// Frames the read loop reads itself: 16 KiB and over.
			headers(fr, enc(":status", "200", "content-length", "70000"), false)
			fr.WriteData(1, false, make([]byte, 20000))
			fr.WriteDataPadded(1, false, make([]byte, 17000), make([]byte, 255))
			fr.WriteData(1, true, make([]byte, 33000))
		},
	} {
		f.Add(agentFrames(seed))
	}
	f.Fuzz(func(t *testing.T, frames []byte) {
		cfg := testH2Config(64<<10, 256<<10, 1<<20)
		cc, a := newFakeAgent(t, cfg)
		errc := fetch(cc)
		a.request()
		a.conn.Write(frames)
		a.conn.Close()
		<-errc // a hang fails the fuzz run by its timeout
		require.Eventually(t, func() bool { return cc.State().StreamsActive == 0 }, 10*time.Second, time.Millisecond)
		assert.EqualValues(t, 1<<20, cfg.budget.avail.Load())
	})
}

// heapInUse is the heap in use after garbage collection, sync.Pool's
// victims included.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
