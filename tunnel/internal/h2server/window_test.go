//lint:file-ignore SA1019 x/net/http2's Transport and Framer are the independent client these tests check the server against.

package h2server_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/clusterconnect/clusterconnect/tunnel/internal/h2server"
)

// uploader sends request bodies over raw frames as fast as the server's
// windows let it, and keeps what it learns of them.
type uploader struct {
	t       *testing.T
	fr      *http2.Framer
	connWin int64
	initWin int64
	streams map[uint32]int64 // each stream's send window
}

func newUploader(t *testing.T, addr string) *uploader {
	fr, _ := rawClient(t, addr)
	u := &uploader{t: t, fr: fr, connWin: 65535, streams: map[uint32]int64{}}
	for u.initWin == 0 {
		u.readFrame()
	}
	return u
}

// readFrame reads one frame and acts on what it says of the windows.
func (u *uploader) readFrame() {
	f, err := u.fr.ReadFrame()
	require.NoError(u.t, err)
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return
		}
		if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
			u.initWin = int64(v)
		}
		require.NoError(u.t, u.fr.WriteSettingsAck())
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			u.connWin += int64(f.Increment)
		} else if _, ok := u.streams[f.StreamID]; ok {
			u.streams[f.StreamID] += int64(f.Increment)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			require.NoError(u.t, u.fr.WritePing(true, f.Data))
		}
	}
}

// open starts a POST whose body the handler reads.
func (u *uploader) open(id uint32) {
	require.NoError(u.t, u.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true,
		BlockFragment: headerBlock(":method", "POST", ":scheme", "https", ":path", "/", ":authority", "agent")}))
	u.streams[id] = u.initWin
}

// send sends size bytes of stream id's body, each frame as soon as the
// windows allow.
func (u *uploader) send(id uint32, size int64, end bool) {
	chunk := make([]byte, 16<<10)
	for size > 0 {
		n := min(size, int64(len(chunk)), u.streams[id], u.connWin)
		if n == 0 {
			u.readFrame()
			continue
		}
		size -= n
		u.streams[id] -= n
		u.connWin -= n
		require.NoError(u.t, u.fr.WriteData(id, end && size == 0, chunk[:n]))
	}
}

// A request body's window (what the client may have sent that the handler
// has not read) doubles while its handler reads as fast as the window lets
// the bytes come (here every read counts as fast: the round trip is an
// hour), up to MaxUploadWindowPerStream and no further; a handler slower
// than that (a round trip of a nanosecond) keeps the first window.
func TestAnUploadsWindowGrowsWhileItsHandlerKeepsUp(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rtt    time.Duration
		window int64
	}{
		{"keeps up", time.Hour, 256 << 10},
		{"falls behind", time.Nanosecond, 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := h2server.WithFixedRTT(&h2server.Config{MaxUploadBufferPerStream: 64 << 10, MaxUploadWindowPerStream: 256 << 10}, tc.rtt)
			addr, conns := server(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				<-r.Context().Done()
			}))
			u := newUploader(t, addr)
			c := <-conns
			u.open(1)
			u.send(1, 4<<20, false)
			assert.Equal(t, tc.window, h2server.StreamWindow(c, 1))
		})
	}
}

// What the windows of a connection's streams grow by comes out of a
// budget of half the connection's window, shared as the relay shares its
// own: up to an eighth of it out of whatever is left, past that only while
// half of it stays free. An upload alone grows to the limit; the next ones,
// beside it, to the eighth; once they end, the budget is all back.
func TestGrownWindowsShareHalfTheConnectionsWindow(t *testing.T) {
	const initial, share, limit = 64 << 10, 256 << 10, 1 << 20
	cfg := h2server.WithFixedRTT(&h2server.Config{
		MaxUploadBufferPerStream:     initial,
		MaxUploadWindowPerStream:     limit,
		MaxUploadBufferPerConnection: 4 << 20, // 2 MiB to grow by, an eighth of it 256 KiB
	}, time.Hour)
	addr, conns := server(t, cfg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	u := newUploader(t, addr)
	c := <-conns
	u.open(1)
	u.send(1, 4<<20, false)
	assert.Equal(t, int64(limit), h2server.StreamWindow(c, 1), "alone, an upload grows to the limit")
	for _, id := range []uint32{3, 5} {
		u.open(id)
		u.send(id, 2<<20, false)
		assert.Equal(t, int64(share), h2server.StreamWindow(c, id), "beside it, uploads grow to the eighth and no further")
	}
	for _, id := range []uint32{1, 3, 5} {
		u.send(id, 16<<10, true)
	}
	// Until all are answered and forgotten: a handler forgets its stream
	// just after it sends the answer's last frame, so there is no frame
	// to wait for.
	for h2server.StreamWindow(c, 1) != 0 || h2server.StreamWindow(c, 3) != 0 || h2server.StreamWindow(c, 5) != 0 {
		time.Sleep(time.Millisecond)
	}
	u.open(7)
	u.send(7, 4<<20, false)
	assert.Equal(t, int64(limit), h2server.StreamWindow(c, 7), "once they end, the next grows to the limit: the budget is back")
}

// An upload over a link with a long round trip takes few round trips: the
// window grows from its first 256 KiB as the handler keeps up, where a
// window that stays moves 256 KiB a round trip. x/net's client, through a
// link that delivers each side's bytes 25 ms after they were written
// (in a synctest bubble, on its fake clock).
func TestAnUploadOverALongRoundTripTakesFewRoundTrips(t *testing.T) {
	const (
		size    = 8 << 20
		oneWay  = 25 * time.Millisecond
		initial = 256 << 10
	)
	upload := func(t *testing.T, grow int32) time.Duration {
		var took time.Duration
		synctest.Test(t, func(t *testing.T) {
			client, server := slowLink(oneWay)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, _ := io.Copy(io.Discard, r.Body)
				if n != size {
					w.WriteHeader(http.StatusBadRequest)
				}
			})
			srv := h2server.New(server, &h2server.Config{MaxUploadBufferPerStream: initial, MaxUploadWindowPerStream: grow}, h)
			go srv.Serve()
			cc, err := (&http2.Transport{}).NewClientConn(client)
			require.NoError(t, err)
			start := time.Now()
			req, _ := http.NewRequest("POST", "https://agent/upload", bytes.NewReader(make([]byte, size)))
			resp, err := cc.RoundTrip(req)
			require.NoError(t, err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			took = time.Since(start)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			cc.Close()
			client.Close()
			server.Close()
			<-srv.Done()
		})
		return took
	}
	rtt := 2 * oneWay
	fixed := upload(t, -1)
	grown := upload(t, 4<<20)
	t.Logf("8 MiB over a %v round trip: %v (%.1f round trips) with a fixed window, %v (%.1f) growing", rtt, fixed, float64(fixed)/float64(rtt), grown, float64(grown)/float64(rtt))
	assert.GreaterOrEqual(t, fixed, size/initial*rtt, "a fixed window moves at most one window a round trip")
	assert.Less(t, grown, 10*rtt, "a growing window takes few round trips")
}

// slowLink returns the two ends of a connection that delivers what either
// end writes oneWay after it was written.
func slowLink(oneWay time.Duration) (net.Conn, net.Conn) {
	a, aFar := net.Pipe()
	b, bFar := net.Pipe()
	go delay(aFar, bFar, oneWay)
	go delay(bFar, aFar, oneWay)
	return a, b
}

// delay copies from src to dst, each read's bytes held until oneWay after
// they were read; it ends when either side closes.
func delay(src, dst net.Conn, oneWay time.Duration) {
	type piece struct {
		due time.Time
		b   []byte
	}
	q := make(chan piece, 1<<16)
	var once sync.Once
	stop := func() { once.Do(func() { src.Close(); dst.Close() }) }
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- piece{time.Now().Add(oneWay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for p := range q {
		time.Sleep(time.Until(p.due))
		if _, err := dst.Write(p.b); err != nil {
			stop()
			for range q {
			}
			return
		}
	}
	stop()
}
