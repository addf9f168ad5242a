//lint:file-ignore SA1019 x/net/http2's Transport and Framer are the independent client these tests check the server against.

package h2server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/clusterconnect/clusterconnect/tunnel/internal/h2server"
)

// server serves h with cfg on a loopback listener, a Conn for each
// connection, and returns its address and the Conns it made.
func server(t *testing.T, cfg *h2server.Config, h http.Handler) (string, <-chan *h2server.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	conns := make(chan *h2server.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s := h2server.New(c, cfg, h)
			conns <- s
			go s.Serve()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), conns
}

// client is x/net's HTTP/2 client, without TLS, to addr.
func client(t *testing.T, addr string) *http.Client {
	t.Helper()
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// An independent client's requests come back right: small answers with
// their length, a body echoed, a large download, HEAD, and trailers both
// ways.
func TestRoundTrips(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	addr, _ := server(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(w, "hello ", r.URL.Query().Get("who"))
		case "/echo":
			io.Copy(w, r.Body)
		case "/big":
			w.Write(big)
		case "/trailers":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Trailer", "X-Sum")
			fmt.Fprintf(w, "%d", len(b))
			w.Header().Set("X-Sum", r.Trailer.Get("X-Req"))
		}
	}))
	c := client(t, addr)
	base := "http://" + addr

	resp, err := c.Get(base + "/small?who=relay")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "hello relay", string(b))
	assert.Equal(t, int64(len("hello relay")), resp.ContentLength, "a small answer says its length")

	body := strings.Repeat("x", 3<<20) // past the default stream window
	resp, err = c.Post(base+"/echo", "text/plain", strings.NewReader(body))
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, len(body), len(b))
	assert.Equal(t, sha256.Sum256([]byte(body)), sha256.Sum256(b))

	resp, err = c.Get(base + "/big")
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, sha256.Sum256(big), sha256.Sum256(b))

	resp, err = c.Head(base + "/small")
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Empty(t, b)

	req, _ := http.NewRequest(http.MethodPut, base+"/trailers", io.NopCloser(strings.NewReader("abc")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Req": {"sum"}}
	resp, err = c.Do(req)
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "3", string(b))
	assert.Equal(t, "sum", resp.Trailer.Get("X-Sum"))
}

// A handler that never reads its request's body holds that stream's
// window, not the connection: another request on the same connection is
// answered.
func TestAStalledUploadLeavesTheConnection(t *testing.T) {
	stalled := make(chan struct{})
	addr, conns := server(t, &h2server.Config{MaxUploadBufferPerStream: 64 << 10, MaxUploadBufferPerConnection: 1 << 20},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/stall" {
				<-stalled
				return
			}
			fmt.Fprint(w, "ok")
		}))
	t.Cleanup(func() { close(stalled) })
	c := client(t, addr)
	go c.Post("http://"+addr+"/stall", "text/plain", bytes.NewReader(make([]byte, 4<<20)))
	<-conns
	resp, err := c.Get("http://" + addr + "/other")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "ok", string(b))
	select {
	case <-conns:
		t.Fatal("the second request took a second connection")
	default:
	}
}

// A client that cancels its request ends the handler's context.
func TestAResetEndsTheHandlersContext(t *testing.T) {
	started, ended := make(chan struct{}), make(chan error, 1)
	addr, _ := server(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		ended <- r.Context().Err()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/watch", nil)
	resp, err := client(t, addr).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	<-started
	cancel()
	assert.ErrorIs(t, <-ended, context.Canceled)
}

// A handler that panics (a reverse proxy whose upstream broke off) resets
// its stream: the client sees an error, never a short body as if whole.
func TestAPanicResetsTheStream(t *testing.T) {
	addr, _ := server(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.Write(make([]byte, 50000))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	resp, err := client(t, addr).Get("http://" + addr + "/")
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Error(t, err)
	var se http2.StreamError
	assert.True(t, errors.As(err, &se) && se.Code == http2.ErrCodeInternal, "%v", err)
}

// Shutdown sends GOAWAY: the stream in flight finishes whole, and then
// the connection closes.
func TestShutdownLetsAStreamFinish(t *testing.T) {
	release := make(chan struct{})
	addr, conns := server(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "done")
	}))
	resp, err := client(t, addr).Get("http://" + addr + "/")
	require.NoError(t, err)
	s := <-conns
	s.Shutdown()
	select {
	case <-s.Done():
		t.Fatal("the connection closed under its stream")
	default:
	}
	close(release)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, "done", string(b))
	<-s.Done()
}

// rawClient speaks HTTP/2 frames to addr, for what a client library
// would not send.
func rawClient(t *testing.T, addr string) (*http2.Framer, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = io.WriteString(conn, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	require.NoError(t, fr.WriteSettings())
	return fr, conn
}

func headerBlock(fields ...string) []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for i := 0; i < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return b.Bytes()
}

// Past MaxConcurrentStreams a new stream is refused, which a client
// retries; the ones open are served.
func TestStreamsPastTheLimitAreRefused(t *testing.T) {
	release := make(chan struct{})
	var served atomic.Int32
	addr, _ := server(t, &h2server.Config{MaxConcurrentStreams: 1}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		<-release
	}))
	fr, _ := rawClient(t, addr)
	get := headerBlock(":method", "GET", ":scheme", "https", ":path", "/", ":authority", "agent")
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get, EndStream: true, EndHeaders: true}))
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: get, EndStream: true, EndHeaders: true}))
	for {
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			assert.Equal(t, uint32(3), rst.StreamID)
			assert.Equal(t, http2.ErrCodeRefusedStream, rst.ErrCode)
			break
		}
	}
	close(release)
	for {
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			assert.Equal(t, uint32(1), h.StreamID)
			assert.Equal(t, "200", h.PseudoValue("status"))
			break
		}
	}
	assert.Equal(t, int32(1), served.Load())
}

// A request whose header list is over MaxHeaderBytes is answered 431; the
// connection serves on.
func TestAnOversizedHeaderListGets431(t *testing.T) {
	addr, _ := server(t, &h2server.Config{MaxHeaderBytes: 1 << 10}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	// Fields each within the limit, the list over it (a single value
	// over it is a COMPRESSION_ERROR that ends the connection, as in
	// x/net's server).
	fields := []string{":method", "GET", ":scheme", "https", ":path", "/", ":authority", "agent"}
	for i := range 8 {
		fields = append(fields, fmt.Sprintf("x-big-%d", i), strings.Repeat("a", 500))
	}
	fr, _ := rawClient(t, addr)
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true, BlockFragment: headerBlock(fields...)}))
	for {
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			assert.Equal(t, "431", h.PseudoValue("status"))
			break
		}
	}
	resp, err := client(t, addr).Get("http://" + addr + "/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

// A client that answers no ping loses its connection after PingInterval
// and PingTimeout with nothing read.
func TestAnUnansweredPingClosesTheConnection(t *testing.T) {
	addr, conns := server(t, &h2server.Config{PingInterval: 50 * time.Millisecond, PingTimeout: 50 * time.Millisecond},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	fr, _ := rawClient(t, addr)
	s := <-conns
	pinged := false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break // closed
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			pinged = true
		}
	}
	assert.True(t, pinged, "the server pinged before it closed")
	<-s.Done()
}

// Streams opened and reset at once (a "rapid reset") leave their handlers
// running until these see their context end; the handlers running count,
// so that a client cannot start them without bound.
func TestResetStreamsCannotStartHandlersWithoutBound(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int32
	addr, _ := server(t, &h2server.Config{MaxConcurrentStreams: 2}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		<-release // a handler that does not watch its context
	}))
	t.Cleanup(func() { close(release) })
	fr, _ := rawClient(t, addr)
	get := headerBlock(":method", "GET", ":scheme", "https", ":path", "/", ":authority", "agent")
	refused := make(chan uint32, 1)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.ErrCode == http2.ErrCodeRefusedStream {
				refused <- rst.StreamID
				return
			}
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
				refused <- 0 // every stream was read, none refused
				return
			}
		}
	}()
	id := uint32(1)
	for ; id < 200; id += 2 {
		require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: get, EndStream: true, EndHeaders: true}))
		require.NoError(t, fr.WriteRSTStream(id, http2.ErrCodeCancel))
	}
	require.NoError(t, fr.WritePing(false, [8]byte{}))
	got := <-refused
	assert.Equal(t, uint32(9), got, "streams 1-7 started their handlers (twice the limit), 9 was refused")
	assert.LessOrEqual(t, started.Load(), int32(4))
}

// holdingConn keeps what is written between Start and Flush, as the
// agent's batcher of TLS records does, and counts both.
type holdingConn struct {
	net.Conn
	held            []byte
	started         bool
	starts, flushes atomic.Int64
	nested          atomic.Bool // Start while started
}

func (c *holdingConn) Write(p []byte) (int, error) {
	if c.started {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *holdingConn) Start() {
	if c.started {
		c.nested.Store(true)
	}
	c.started = true
	c.starts.Add(1)
}

func (c *holdingConn) Flush() error {
	c.started = false
	c.flushes.Add(1)
	held := c.held
	c.held = nil
	if len(held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(held)
	return err
}

// With a Batcher that holds what is written until its Flush, every answer
// still arrives whole: the server flushes the batch whenever it flushes
// its own buffer, and starts no batch it leaves open.
func TestABatcherHoldsWritesOnlyUntilTheFlush(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			fmt.Fprint(w, "hello")
		case "/echo":
			io.Copy(w, r.Body)
		case "/big":
			for p := big; len(p) > 0; p = p[32<<10:] {
				w.Write(p[:32<<10])
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	conns := make(chan *holdingConn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		hc := &holdingConn{Conn: c}
		conns <- hc
		h2server.New(hc, &h2server.Config{Batcher: hc}, h).Serve()
	}()
	c := client(t, ln.Addr().String())

	resp, err := c.Get("http://x/small")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "hello", string(b))

	resp, err = c.Post("http://x/echo", "text/plain", bytes.NewReader(big[:100<<10]))
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, big[:100<<10], b)

	resp, err = c.Get("http://x/big")
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, sha256.Sum256(big), sha256.Sum256(b))

	hc := <-conns
	c.CloseIdleConnections()
	assert.False(t, hc.nested.Load(), "a batch started inside another")
	assert.Positive(t, hc.starts.Load())
}

// An upload reaches a handler that reads it in odd pieces whole and in
// order, and waiting for the handler costs no memory that grows with it:
// what the client sends waits in pooled chunks, where one growing buffer
// was reallocated and copied as the bytes came in (allocations measured
// over the whole process, client included).
func TestAnUploadArrivesWholeWithoutGrowingBuffers(t *testing.T) {
	const size = 16 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i*7 + i>>13)
	}
	want := sha256.Sum256(body)
	addr, _ := server(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		buf := make([]byte, 1000) // reads that end anywhere in a chunk
		n, err := io.CopyBuffer(h, struct{ io.Reader }{r.Body}, buf)
		if err != nil || n != size {
			http.Error(w, fmt.Sprint(n, err), http.StatusBadRequest)
			return
		}
		w.Write(h.Sum(nil))
	}))
	c := client(t, addr)
	post := func() []byte {
		resp, err := c.Post("http://"+addr+"/upload", "application/octet-stream", bytes.NewReader(body))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return b
	}
	assert.Equal(t, want[:], post(), "the handler read the body whole and in order")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	assert.Equal(t, want[:], post())
	runtime.ReadMemStats(&after)
	perMiB := float64(after.TotalAlloc-before.TotalAlloc) / (size >> 20)
	t.Logf("%.0f bytes allocated per MiB uploaded", perMiB)
	assert.Less(t, perMiB, float64(1<<20), "allocations per MiB uploaded (3 MiB when a growing buffer held it)")
}
