package tunnel_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

type closeWriter interface{ CloseWrite() error }

// upgradeEcho switches to "echo/1", copies its input back until the client
// half-closes, then says "bye" and closes. Any other request gets 400.
var upgradeEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "echo/1" {
		http.Error(w, "want Upgrade: echo/1", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	brw.Flush()
	io.Copy(conn, brw) // until the client's half-close
	fmt.Fprint(conn, "bye")
})

// dialUpgrade opens an HTTP/1.1 connection to the relay and upgrades it.
func dialUpgrade(t *testing.T, h *harness, proto string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	return dialUpgradePath(t, h, "/api/v1/namespaces/ns/pods/p/exec?command=cat", proto)
}

// dialUpgradePath is dialUpgrade for a path of the cluster's.
func dialUpgradePath(t *testing.T, h *harness, path, proto string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := tls.Dial("tcp", h.srv.Listener.Addr().String(), &tls.Config{RootCAs: h.roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	req, _ := http.NewRequest(http.MethodGet, h.url(path), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", proto)
	require.NoError(t, req.Write(conn))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	require.NoError(t, err)
	return conn, br, resp
}

func TestUpgradeCarriesBytesBothWaysWithHalfClose(t *testing.T) {
	h := newHarness(t, upgradeEcho, harnessOpts{})
	conn, br, resp := dialUpgrade(t, h, "echo/1")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	assert.Equal(t, "echo/1", resp.Header.Get("Upgrade"))

	payload := strings.Repeat("exec stdin ", 50000) // larger than any one buffer
	go func() {
		io.WriteString(conn, payload)
		conn.(closeWriter).CloseWrite() // stdin EOF
	}()
	got, err := io.ReadAll(br)
	require.NoError(t, err, "the relay passes the agent's close on as EOF")
	assert.Equal(t, payload+"bye", string(got), "output after the client's half-close still arrives")
}

// A refused upgrade is an ordinary response, and its stream is gone as
// soon as the answer has been read: the agent's handler sees the end at
// once, and the relay's counters agree.
func TestUpgradeRefusedIsAnOrdinaryResponse(t *testing.T) {
	ended := make(chan struct{})
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upgradeEcho(w, r)
		if r.Header.Get("Upgrade") != "echo/1" {
			go func() { <-r.Context().Done(); close(ended) }()
		}
	}), harnessOpts{})
	_, br, resp := dialUpgrade(t, h, "other/1")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	body, _ := io.ReadAll(io.LimitReader(br, int64(len("want Upgrade: echo/1\n"))))
	assert.Equal(t, "want Upgrade: echo/1\n", string(body))
	<-ended // a hang here fails the test by timeout
	require.Eventually(t, func() bool {
		st := h.relay.Stats()
		return st.StreamsOpened == 1 && st.StreamsClosed == 1
	}, 10*time.Second, 5*time.Millisecond)
}

// An upgrade that carries a body is refused before any stream is opened,
// without the relay reading the body: a client trickling one would hold a
// stream of the cluster for as long as it liked.
func TestUpgradeWithABodyIsRefusedBeforeAnyStream(t *testing.T) {
	h := newHarness(t, upgradeEcho, harnessOpts{})
	conn, err := tls.Dial("tcp", h.srv.Listener.Addr().String(), &tls.Config{RootCAs: h.roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /clusters/%s/api/v1/namespaces/ns/pods/p/exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", clusterID) // and never the end
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	body, _ := io.ReadAll(resp.Body)
	assert.Contains(t, string(body), "an upgrade request may not carry a body")
	_, err = br.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the relay closed the connection")
	assert.Zero(t, h.relay.Stats().StreamsOpened)

	// Importers' RoundTripper refuses the same.
	req, _ := http.NewRequest(http.MethodPost, "https://cluster/exec", strings.NewReader("x"))
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo/1")
	_, err = h.relay.RoundTripper(clusterID).RoundTrip(req)
	assert.ErrorIs(t, err, tunnel.ErrUpgradeBody)
}

// An agent that never answers an upgrade does not hold the stream: the
// client gets 504 after UpgradeTimeout and the stream is reset.
func TestUpgradeWithoutAnAnswerTimesOut(t *testing.T) {
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}), harnessOpts{relayCfg: func(c *tunnel.RelayConfig) { c.UpgradeTimeout = 200 * time.Millisecond }})
	_, br, resp := dialUpgrade(t, h, "echo/1")
	assert.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
	body, _ := io.ReadAll(io.LimitReader(br, resp.ContentLength))
	assert.Contains(t, string(body), "the agent did not answer in time")
	require.Eventually(t, func() bool {
		st := h.relay.Stats()
		return st.StreamsOpened == 1 && st.StreamsClosed == 1
	}, 10*time.Second, 5*time.Millisecond)
}

// The agent's side can half-close too: its output ends (EOF at the client)
// while it keeps reading the client's input.
func TestAgentSideHalfClose(t *testing.T) {
	got := make(chan string, 1)
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: half/1\r\n\r\nhello")
		brw.Flush()
		conn.(closeWriter).CloseWrite()
		rest, err := io.ReadAll(brw)
		if err != nil {
			rest = append(rest, []byte(" error: "+err.Error())...)
		}
		got <- string(rest)
	}), harnessOpts{})
	conn, br, resp := dialUpgrade(t, h, "half/1")
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	out, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(out))
	io.WriteString(conn, "still listening?")
	conn.(closeWriter).CloseWrite()
	assert.Equal(t, "still listening?", <-got)
}

func TestDialContextServesHTTP1OverRawStream(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{})
	conn, err := h.relay.DialContext(context.Background(), clusterID)
	require.NoError(t, err)
	defer conn.Close()
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}
	resp, err := (&http.Client{Transport: tr}).Get("http://cluster/raw/path")
	require.NoError(t, err)
	assert.Equal(t, "/raw/path", decode(t, resp).Path)

	_, err = h.relay.DialContext(context.Background(), "not-connected")
	assert.ErrorContains(t, err, "not connected")
}

func TestRoundTripperForImporters(t *testing.T) {
	h := newHarness(t, upgradeEcho, harnessOpts{})
	client := &http.Client{Transport: h.relay.RoundTripper(clusterID)}

	resp, err := client.Get("https://cluster/plain")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "ordinary requests reach the handler")

	req, _ := http.NewRequest(http.MethodGet, "https://cluster/exec", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo/1")
	resp, err = client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	rw := resp.Body.(io.ReadWriteCloser)
	io.WriteString(rw, "ping")
	rw.(closeWriter).CloseWrite()
	out, err := io.ReadAll(rw)
	require.NoError(t, err)
	assert.Equal(t, "pingbye", string(out))
	rw.Close()
}

// Clients that vanish mid-upgrade and mid-request leave nothing open on
// either side: every stream the relay and the agent opened is closed.
func TestNothingLeaksWhenClientsVanish(t *testing.T) {
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			upgradeEcho(w, r)
			return
		}
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}), harnessOpts{})
	for range 10 {
		conn, _, resp := dialUpgrade(t, h, "echo/1")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		io.WriteString(conn, "half a message")
		conn.Close() // gone without a half-close

		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url("/watch"), nil)
		resp, err := h.client().Do(req)
		require.NoError(t, err)
		cancel()
		resp.Body.Close()
	}
	require.Eventually(t, func() bool {
		r, a := h.relay.Stats(), h.agent.Stats()
		return r.StreamsOpened == 20 && r.StreamsClosed == 20 && a.StreamsOpened == 20 && a.StreamsClosed == 20
	}, 10*time.Second, 10*time.Millisecond, "streams left open on the relay or the agent")
}

// upperBody reads its connection's bytes in upper case and counts what
// the client writes through it.
type upperBody struct {
	io.ReadWriteCloser
	wrote *atomic.Int64
}

func (u upperBody) Read(p []byte) (int, error) {
	n, err := u.ReadWriteCloser.Read(p)
	copy(p, bytes.ToUpper(p[:n]))
	return n, err
}

func (u upperBody) Write(p []byte) (int, error) {
	u.wrote.Add(int64(len(p)))
	return u.ReadWriteCloser.Write(p)
}

// halfClosingBody is an upperBody that takes the client's half-close.
type halfClosingBody struct {
	upperBody
	halfClosed *atomic.Bool
}

func (b halfClosingBody) CloseWrite() error {
	b.halfClosed.Store(true)
	return b.ReadWriteCloser.(closeWriter).CloseWrite()
}

// Upgrades go through the Middleware too: it may wrap the connection
// (sessions.Upgrades ends a lost exec or port-forward in words that
// way), seeing what the cluster sends and what the client writes, and
// the client's half-close — through the wrapper if it takes one, else
// past it — still reaches the agent; a Middleware that answers an
// upgrade itself is refused.
func TestMiddlewareSeesUpgrades(t *testing.T) {
	var answerItself, takeHalfClose, halfClosed atomic.Bool
	var wrote atomic.Int64
	h := newHarness(t, upgradeEcho, harnessOpts{relayCfg: func(c *tunnel.RelayConfig) {
		c.Middleware = func(next http.RoundTripper) http.RoundTripper {
			return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
				if answerItself.Load() {
					return &http.Response{StatusCode: http.StatusSwitchingProtocols, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("")), Request: req}, nil
				}
				resp, err := next.RoundTrip(req)
				if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
					body := upperBody{resp.Body.(io.ReadWriteCloser), &wrote}
					resp.Body = body
					if takeHalfClose.Load() {
						resp.Body = halfClosingBody{body, &halfClosed}
					}
				}
				return resp, err
			})
		}
	}})
	for _, take := range []bool{false, true} {
		takeHalfClose.Store(take)
		wrote.Store(0)
		conn, br, resp := dialUpgrade(t, h, "echo/1")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		io.WriteString(conn, "through the middleware")
		conn.(closeWriter).CloseWrite()
		got, err := io.ReadAll(br)
		require.NoError(t, err)
		assert.Equal(t, "THROUGH THE MIDDLEWAREBYE", string(got), "the echo's bye: the half-close reached it")
		assert.EqualValues(t, len("through the middleware"), wrote.Load(), "the client's bytes went through the wrapper")
		assert.Equal(t, take, halfClosed.Load(), "the half-close went through the wrapper that takes one")
	}

	answerItself.Store(true)
	_, _, resp := dialUpgrade(t, h, "echo/1")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
}
