package h2transport_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/clusterconnect/clusterconnect/internal/h2transport"
)

// server is a real net/http HTTPS server that counts the connections the
// transport dials to it.
type server struct {
	*httptest.Server
	dials atomic.Int32
}

func newServer(t *testing.T, h http.Handler, h2 bool, configure func(*http.Server)) *server {
	s := &server{Server: httptest.NewUnstartedServer(h)}
	s.EnableHTTP2 = h2
	if configure != nil {
		configure(s.Config)
	}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.dials.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *server) transport() *h2transport.Transport {
	pool := s.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	return h2transport.New(h2transport.Config{Addr: s.Listener.Addr().String(), TLS: &tls.Config{RootCAs: pool, ServerName: "example.com"}})
}

func get(t *testing.T, rt http.RoundTripper, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	return resp, string(body)
}

func TestRequestsShareOneHTTP2Connection(t *testing.T) {
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %d", r.Proto, r.Method, r.URL.Path, len(body))
		w.Header().Set("X-Sum", "done")
	}), true, nil)
	rt := srv.transport()

	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			resp, body := get(t, rt, srv.URL+fmt.Sprintf("/get/%d", i))
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, fmt.Sprintf("HTTP/2.0 GET /get/%d 0", i), body)
			assert.Equal(t, "done", resp.Trailer.Get("X-Sum"))
		})
	}
	wg.Wait()

	req, err := http.NewRequest(http.MethodPost, srv.URL+"/post", bytes.NewReader(make([]byte, 1<<20)))
	require.NoError(t, err)
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "HTTP/2.0 POST /post 1048576", string(body))

	assert.EqualValues(t, 1, srv.dials.Load(), "every request went on one connection")
}

func TestAConnectionPerServersStreamLimit(t *testing.T) {
	const limit, requests = 2, 5
	in, release := make(chan struct{}, 2*requests), make(chan struct{})
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		<-release
		io.WriteString(w, "ok")
	}), true, func(s *http.Server) {
		s.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: limit}
	})
	rt := srv.transport()

	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			resp, err := rt.RoundTrip(mustRequest(t, srv.URL))
			if !assert.NoError(t, err) {
				in <- struct{}{} // not in the handler, but the test must not wait for it
				return
			}
			body, _ := io.ReadAll(resp.Body)
			assert.Equal(t, "ok", string(body))
		})
	}
	for range requests {
		<-in // all five in the handler at once: none waited for another's stream
	}
	close(release)
	wg.Wait()
	assert.EqualValues(t, (requests+limit-1)/limit, srv.dials.Load())
}

func TestIdleConnectionsClose(t *testing.T) {
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), true, nil)
	rt := srv.transport()
	get(t, rt, srv.URL)
	// A stream is forgotten just after its answer's end reaches the
	// reader, so the connection may still carry it for a moment.
	for try := 0; srv.dials.Load() == 1 && try < 1000; try++ {
		rt.CloseIdleConnections()
		get(t, rt, srv.URL)
	}
	assert.EqualValues(t, 2, srv.dials.Load(), "a closed idle connection is not used again")
}

func TestAServerWithoutHTTP2IsLeftToTheCaller(t *testing.T) {
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), false, nil)
	rt := srv.transport()

	body := &closeCounter{Reader: strings.NewReader("left for another way")}
	req, err := http.NewRequest(http.MethodPost, srv.URL, body)
	require.NoError(t, err)
	_, err = rt.RoundTrip(req)
	require.ErrorIs(t, err, h2transport.ErrNotHTTP2)
	assert.Zero(t, body.closed.Load(), "the body is left open, to be sent another way")
	assert.True(t, rt.NotHTTP2())

	_, err = rt.RoundTrip(req)
	require.ErrorIs(t, err, h2transport.ErrNotHTTP2)
	assert.EqualValues(t, 1, srv.dials.Load(), "the server is not dialed again")
}

func TestUpgradesAreLeftToTheCaller(t *testing.T) {
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), true, nil)
	rt := srv.transport()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/exec", nil)
	require.NoError(t, err)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	_, err = rt.RoundTrip(req)
	require.ErrorIs(t, err, h2transport.ErrUpgrade)
	assert.Zero(t, srv.dials.Load())
}

type closeCounter struct {
	io.Reader
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

// h2Listener listens for TLS on loopback offering h2 alone, with a
// certificate for example.com; roots is a client config that trusts it.
func h2Listener(t *testing.T) (ln net.Listener, roots *tls.Config) {
	ts := httptest.NewUnstartedServer(nil)
	ts.EnableHTTP2 = true
	ts.StartTLS() // for its certificate and client config only
	cert := ts.TLS.Certificates[0]
	pool := ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	ts.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln, &tls.Config{RootCAs: pool, ServerName: "example.com"}
}

// serverFramer reads the client's preface from c and returns the server's
// Framer on it.
func serverFramer(c net.Conn) (*http2.Framer, error) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return nil, err
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	return fr, nil
}

// scripted serves HTTP/2 over TLS on loopback: each connection's first
// request gets what script does with it, later ones an answer of "ok".
type scripted struct {
	addr  string
	roots *tls.Config
	dials atomic.Int32
}

func newScripted(t *testing.T, script func(conn int, fr *http2.Framer, id uint32, answer func(uint32))) *scripted {
	ln, roots := h2Listener(t)
	s := &scripted{addr: ln.Addr().String(), roots: roots}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(s.dials.Add(1))
			go func() {
				defer c.Close()
				fr, err := serverFramer(c)
				if err != nil {
					return
				}
				var hbuf bytes.Buffer
				enc := hpack.NewEncoder(&hbuf)
				answer := func(id uint32) {
					hbuf.Reset()
					enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
					fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
					fr.WriteData(id, true, []byte("ok"))
				}
				fr.WriteSettings()
				first := true
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							fr.WriteSettingsAck()
						}
					case *http2.PingFrame:
						if !f.IsAck() {
							fr.WritePing(true, f.Data)
						}
					case *http2.MetaHeadersFrame:
						if first {
							first = false
							script(n, fr, f.StreamID, answer)
							continue
						}
						answer(f.StreamID)
					}
				}
			}()
		}
	}()
	return s
}

func (s *scripted) transport() *h2transport.Transport {
	return h2transport.New(h2transport.Config{Addr: s.addr, TLS: s.roots})
}

func TestRequestsTheServerDidNotServeGoAgain(t *testing.T) {
	cases := map[string]func(conn int, fr *http2.Framer, id uint32, answer func(uint32)){
		"GOAWAY before its stream": func(conn int, fr *http2.Framer, id uint32, answer func(uint32)) {
			if conn == 1 {
				fr.WriteGoAway(0, http2.ErrCodeNo, nil)
				return
			}
			answer(id)
		},
		"REFUSED_STREAM": func(conn int, fr *http2.Framer, id uint32, answer func(uint32)) {
			fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
		},
	}
	for name, script := range cases {
		t.Run(name, func(t *testing.T) {
			s := newScripted(t, script)
			rt := s.transport()
			resp, body := get(t, rt, "https://"+s.addr+"/")
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "ok", body)
		})
	}
}

func TestARequestWithABodyIsNotSentTwice(t *testing.T) {
	s := newScripted(t, func(conn int, fr *http2.Framer, id uint32, answer func(uint32)) {
		fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
	})
	rt := s.transport()
	req, err := http.NewRequest(http.MethodPost, "https://"+s.addr+"/", strings.NewReader("once"))
	require.NoError(t, err)
	_, err = rt.RoundTrip(req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "h2transport: the server at "+s.addr+" refused the stream unprocessed")
	assert.EqualValues(t, 1, s.dials.Load())
}

func TestAServerThatResetsIsNamed(t *testing.T) {
	s := newScripted(t, func(conn int, fr *http2.Framer, id uint32, answer func(uint32)) {
		fr.WriteRSTStream(id, http2.ErrCodeInternal)
	})
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://"+s.addr+"/", nil)
	require.NoError(t, err)
	_, err = s.transport().RoundTrip(req)
	require.Error(t, err)
	assert.False(t, errors.Is(err, h2transport.ErrNotHTTP2))
	assert.Equal(t, "h2transport: the server at "+s.addr+" reset the stream: INTERNAL_ERROR", err.Error())
}

func mustRequest(t *testing.T, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	return req
}

// A request whose context ends while another request's dial is under
// way (here to a server that accepts and never answers the TLS
// handshake) returns at once, not after that dial.
func TestARequestDoesNotWaitForAnothersDialPastItsContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	rt := h2transport.New(h2transport.Config{Addr: ln.Addr().String(), TLS: &tls.Config{ServerName: "example.com"}})

	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx1, http.MethodGet, "https://"+ln.Addr().String(), nil)
		_, err := rt.RoundTrip(req)
		first <- err
	}()
	c := <-accepted // the first request's dial is under way, its handshake unanswered
	defer c.Close()

	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	req, _ := http.NewRequestWithContext(ctx2, http.MethodGet, "https://"+ln.Addr().String(), nil)
	_, err = rt.RoundTrip(req)
	require.ErrorIs(t, err, context.Canceled)
	select {
	case err := <-first:
		t.Fatalf("the first request ended before its context: %v", err)
	default:
	}

	cancel1()
	require.ErrorIs(t, <-first, context.Canceled)
}

func TestARequestWithABodyTheServerWentAwayBeforeIsNamed(t *testing.T) {
	s := newScripted(t, func(conn int, fr *http2.Framer, id uint32, answer func(uint32)) {
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	req, err := http.NewRequest(http.MethodPost, "https://"+s.addr+"/", strings.NewReader("once"))
	require.NoError(t, err)
	_, err = s.transport().RoundTrip(req)
	require.Error(t, err)
	assert.Equal(t, "h2transport: the server at "+s.addr+" is closing the connection before serving this request", err.Error())
	assert.EqualValues(t, 1, s.dials.Load())
}

// A new connection carries no request before the server's SETTINGS are
// in force: its first request follows the acknowledgement of them, so
// that it counts against the server's own stream limit.
func TestANewConnectionWaitsForTheServersSettings(t *testing.T) {
	ln, roots := h2Listener(t)
	first := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fr, err := serverFramer(c)
		if err != nil {
			return
		}
		// The client's SETTINGS and WINDOW_UPDATE, which it sends as it
		// starts; only then the server's own SETTINGS.
		for range 2 {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
		fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if f.IsAck() {
					first <- "SETTINGS ACK"
					return
				}
			case *http2.MetaHeadersFrame:
				first <- "HEADERS"
				return
			}
		}
	}()
	rt := h2transport.New(h2transport.Config{Addr: ln.Addr().String(), TLS: roots})
	go rt.RoundTrip(mustRequest(t, "https://"+ln.Addr().String()+"/"))
	assert.Equal(t, "SETTINGS ACK", <-first, "what the server read first after its SETTINGS")
}
