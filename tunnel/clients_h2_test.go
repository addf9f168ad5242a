package tunnel_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// writeCountingListener counts the writes to every connection it accepts.
type writeCountingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &writeCountingConn{Conn: c, n: &l.writes}, nil
}

type writeCountingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *writeCountingConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

type connKey struct{}

// h2Server serves h over TLS with HTTP/2, configured by configure, and
// counts the writes to its connections.
func h2Server(t *testing.T, h http.Handler, configure func(*http.Server) error) (*httptest.Server, *writeCountingListener) {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = quietLog
	srv.EnableHTTP2 = true
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, "set by ConnContext")
	}
	require.NoError(t, configure(srv.Config))
	counted := &writeCountingListener{Listener: srv.Listener}
	srv.Listener = counted
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, counted
}

// A small answer to an HTTP/2 client leaves in one write: its HEADERS
// with its DATA. net/http's own HTTP/2 server writes them apart when the
// answer declares its length, as the relay's copies of agents' answers
// do.
func TestConfigureServerSendsASmallAnswerInOneWrite(t *testing.T) {
	const body = `{"kind":"Status","status":"Success"}`
	small := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, body)
	})
	for _, tc := range []struct {
		name      string
		configure func(*http.Server) error
		writes    int64
	}{
		// However slow the machine, the DATA comes within the hold.
		{"ConfigureServer", func(s *http.Server) error { return tunnel.ConfigureServerHolding(s, time.Hour) }, 1},
		{"net/http", func(*http.Server) error { return nil }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, counted := h2Server(t, small, tc.configure)
			client := srv.Client()
			get := func() {
				resp, err := client.Get(srv.URL)
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				require.Equal(t, 2, resp.ProtoMajor)
				require.Contains(t, string(body), "Success")
			}
			get() // the connection's setup: TLS, SETTINGS, their acknowledgements
			before := counted.writes.Load()
			get()
			assert.Equal(t, tc.writes, counted.writes.Load()-before, "writes for one small answer")
		})
	}
}

// Headers whose body comes later, as a watch's, are not held back until
// the body; and the handler sees what net/http's HTTP/2 would give it.
func TestConfigureServerSendsHeadersAheadOfALateBody(t *testing.T) {
	body := make(chan string)
	seen := make(chan *http.Request, 1)
	srv, _ := h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		io.WriteString(w, <-body)
	}), tunnel.ConfigureServer)

	resp, err := srv.Client().Get(srv.URL + "/watch")
	require.NoError(t, err, "the answer's headers arrive while its body has not been written")
	defer resp.Body.Close()
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	body <- `{"type":"ADDED"}`
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, `{"type":"ADDED"}`, string(got))

	r := <-seen
	assert.Equal(t, 2, r.ProtoMajor)
	require.NotNil(t, r.TLS, "the request carries its connection's TLS state")
	assert.GreaterOrEqual(t, r.TLS.Version, uint16(tls.VersionTLS12))
	assert.Equal(t, "set by ConnContext", r.Context().Value(connKey{}), "the server's ConnContext reaches the handler")
	assert.NotEmpty(t, r.RemoteAddr)
}

// The server's own bounds still hold under ConfigureServer: the streams a
// connection may open (srv.HTTP2), and the idle timeout that closes a
// connection left open for nothing (srv.IdleTimeout).
func TestConfigureServerKeepsTheServersBounds(t *testing.T) {
	srv, _ := h2Server(t, http.NotFoundHandler(), func(s *http.Server) error {
		s.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 7}
		s.IdleTimeout = 50 * time.Millisecond
		return tunnel.ConfigureServer(s)
	})
	conn, fr, settings := dialH2(t, srv.Listener.Addr().String(), srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs)
	streams, ok := settings.Value(http2.SettingMaxConcurrentStreams)
	assert.True(t, ok)
	assert.EqualValues(t, 7, streams)

	// Nothing more is sent: the server ends the connection when idle
	// (the deadline only turns a server that never does into a failure).
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	var goAway bool
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			goAway = true
		}
	}
	assert.True(t, goAway, "an idle connection is told GOAWAY and closed")
}

// A caller, signed in or not, cannot make the relay keep a buffer the size
// of a large frame for as long as it holds its connection open: HTTP/2
// reads each frame whole into a buffer that stays as large as the
// largest frame a connection has sent, and x/net's servers take frames of
// up to 1 MiB unless told otherwise. Under ConfigureServer a client may
// send 16 KiB frames, so a connection held open this way costs ~16 KiB.
func TestClientsLargeFramesLeaveNoLargeBuffer(t *testing.T) {
	h := newHarness(t, nil, harnessOpts{noAgent: true})
	const conns = 20
	type client struct {
		conn *tls.Conn
		fr   *http2.Framer
		max  uint32
	}
	var clients []client
	for range conns {
		conn, fr, settings := dialH2(t, h.srv.Listener.Addr().String(), h.roots)
		max, ok := settings.Value(http2.SettingMaxFrameSize)
		if !ok {
			max = 16 << 10
		}
		clients = append(clients, client{conn, fr, max})
	}
	before := tunnel.HeapInUse()
	for _, c := range clients {
		// A request for a cluster nobody knows, answered at once; then
		// the largest DATA frame the server takes, on that stream.
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "relay"}, {":path", "/clusters/nobody/x"}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		require.NoError(t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}))
		// Written by hand: the test's own Framer would keep a buffer
		// the frame's size too.
		n := int(min(c.max, 1<<20))
		_, err := c.conn.Write(append([]byte{byte(n >> 16), byte(n >> 8), byte(n), 0, 0, 0, 0, 0, 1}, make([]byte, n)...))
		require.NoError(t, err)
		require.NoError(t, c.fr.WritePing(false, [8]byte{1}))
		for { // the ping's answer: the server has read the frame
			f, err := c.fr.ReadFrame()
			require.NoError(t, err)
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
				break
			}
		}
	}
	per := int64(tunnel.HeapInUse()-before) / conns
	t.Logf("server max frame %d bytes; heap per connection after one such frame: %d bytes", clients[0].max, per)
	assert.Less(t, per, int64(64<<10))
}

// dialH2 opens an HTTP/2 connection by hand (TLS, preface, empty
// SETTINGS) and returns it with the server's SETTINGS; it is closed when
// the test ends.
func dialH2(t *testing.T, addr string, roots *x509.CertPool) (*tls.Conn, *http2.Framer, *http2.SettingsFrame) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.Equal(t, "h2", conn.ConnectionState().NegotiatedProtocol)
	_, err = io.WriteString(conn, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(conn, conn)
	require.NoError(t, fr.WriteSettings())
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	settings, ok := f.(*http2.SettingsFrame)
	require.True(t, ok, "the server speaks first with its SETTINGS, got %v", f)
	return conn, fr, settings
}
