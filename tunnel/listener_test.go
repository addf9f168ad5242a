package tunnel_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// accepted listens on loopback through ClientListener and returns the
// server's end and the client's end of one connection.
func accepted(t *testing.T, sendBuffer int, writeTimeout time.Duration) (server, client net.Conn) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := tunnel.ClientListener(tcp, tunnel.ClientListenerConfig{SendBuffer: sendBuffer, WriteTimeout: writeTimeout})
	t.Cleanup(func() { ln.Close() })
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		// A client that takes little at a time, so the server's
		// writes back up.
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
	}}
	client, err = d.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { server.Close() })
	return server, client
}

func sendBufferOf(t *testing.T, c net.Conn) int {
	t.Helper()
	sc, ok := c.(syscall.Conn)
	require.True(t, ok, "%T has no socket", c)
	rc, err := sc.SyscallConn()
	require.NoError(t, err)
	var size int
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) { size, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF) }))
	require.NoError(t, serr)
	return size
}

func TestClientListenerFixesTheSendBuffer(t *testing.T) {
	fixed, _ := accepted(t, 64<<10, 0)
	// Linux reserves twice the size asked for, and then never grows it.
	assert.Equal(t, 128<<10, sendBufferOf(t, fixed))

	auto, _ := accepted(t, 0, 0)
	assert.NotEqual(t, 128<<10, sendBufferOf(t, auto), "0 leaves the kernel's own size")
}

// fill writes to c until a write times out, and returns how much went.
func fill(t *testing.T, c net.Conn) int {
	t.Helper()
	require.NoError(t, c.SetWriteDeadline(time.Now().Add(300*time.Millisecond)))
	chunk := make([]byte, 32<<10)
	total := 0
	for {
		n, err := c.Write(chunk)
		total += n
		if err != nil {
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			return total
		}
	}
}

// drain reads c to its end and returns how much came and the error that
// ended it.
func drain(c net.Conn) (int64, error) {
	c.SetReadDeadline(time.Now().Add(time.Minute))
	n, err := io.Copy(io.Discard, c)
	return n, err
}

func TestClientListenerResetsAConnectionWhoseWriteTimedOut(t *testing.T) {
	server, client := accepted(t, 64<<10, 0)
	sent := fill(t, server)
	require.NoError(t, server.Close())
	// The bytes the client never read are dropped with the connection,
	// rather than trickled to it after the relay gave up on it.
	got, err := drain(client)
	assert.True(t, errors.Is(err, syscall.ECONNRESET), "got %d of %d bytes, then %v", got, sent, err)
	assert.Less(t, got, int64(sent))
}

func TestClientListenerClosesOtherConnectionsGracefully(t *testing.T) {
	server, client := accepted(t, 64<<10, 0)
	payload := make([]byte, 1<<20)
	done := make(chan error, 1)
	go func() {
		_, err := server.Write(payload)
		done <- errors.Join(err, server.Close())
	}()
	got, err := drain(client)
	require.NoError(t, <-done)
	assert.NoError(t, err)
	assert.Equal(t, int64(len(payload)), got, "every byte written before Close arrives")
}

func TestClientListenerEndsAConnectionWhoseClientTakesNothing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_USER_TIMEOUT is set on Linux only")
	}
	server, _ := accepted(t, 64<<10, time.Second)
	// A whole answer, written as far as the server can tell: it fits the
	// kernel's buffers, so no write of the server's ever times out.
	_, err := server.Write(make([]byte, 64<<10))
	require.NoError(t, err)
	// The client never reads; the kernel gives up on it after the write
	// timeout instead of holding the bytes while the connection idles.
	server.SetReadDeadline(time.Now().Add(time.Minute))
	_, err = server.Read(make([]byte, 1))
	assert.ErrorIs(t, err, syscall.ETIMEDOUT)
}

func TestClientListenerRefusesConnectionsPastItsBound(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := make(chan struct{}, 10)
	ln := tunnel.ClientListener(tcp, tunnel.ClientListenerConfig{MaxConns: 2, OnRefused: func() { refused <- struct{}{} }})
	defer ln.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	first, err := ln.Accept()
	require.NoError(t, err)
	dial()
	_, err = ln.Accept()
	require.NoError(t, err)

	// A third client is reset; Accept waits for one it may take.
	third := dial()
	next := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			next <- c
		}
	}()
	<-refused
	third.SetReadDeadline(time.Now().Add(time.Minute))
	_, err = third.Read(make([]byte, 1))
	assert.ErrorIs(t, err, syscall.ECONNRESET)

	// Once one closes, the next client is served.
	require.NoError(t, first.Close())
	fourth := dial()
	server := <-next
	defer server.Close()
	_, err = server.Write([]byte("served"))
	require.NoError(t, err)
	got := make([]byte, 6)
	fourth.SetReadDeadline(time.Now().Add(time.Minute))
	_, err = io.ReadFull(fourth, got)
	require.NoError(t, err)
	assert.Equal(t, "served", string(got))
	assert.Empty(t, refused, "nothing else was refused")
}

// handshakeServer serves TLS handshakes on a ClientListener bounded to
// max at once, each with deadline to complete; inside counts the
// handshakes being computed, held in GetCertificate until a send on
// gate lets one of them go on. Each handshake's server-side error is sent
// on errs.
type handshakeServer struct {
	addr    string
	roots   *x509.CertPool
	inside  atomic.Int32
	most    atomic.Int32
	expired atomic.Int32 // OnHandshakeExpired's calls
	bounded net.Listener // the ClientListener under the TLS
	gate    chan struct{}
	errs    chan error
	conns   chan net.Conn // each connection as it is accepted
}

func serveHandshakes(t *testing.T, max int, deadline time.Duration, curves ...tls.CurveID) *handshakeServer {
	t.Helper()
	ca, err := pki.NewCA("handshake test CA")
	require.NoError(t, err)
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	require.NoError(t, err)
	cert, err := leaf.TLSCertificate()
	require.NoError(t, err)
	s := &handshakeServer{roots: ca.Pool(), gate: make(chan struct{}), errs: make(chan error, 100), conns: make(chan net.Conn, 100)}
	// The certificate is chosen once the key exchange is computed, before
	// the signature: while the handshake holds its place.
	cfg := tunnel.LimitHandshakes(&tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			n := s.inside.Add(1)
			for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
			}
			<-s.gate
			s.inside.Add(-1)
			return &cert, nil
		},
		CurvePreferences: curves})
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.bounded = tunnel.ClientListener(tcp, tunnel.ClientListenerConfig{MaxHandshakes: max,
		OnHandshakeExpired: func() { s.expired.Add(1) }})
	ln := tls.NewListener(s.bounded, cfg)
	t.Cleanup(func() { ln.Close() })
	s.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns <- c
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(deadline))
				s.errs <- c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return s
}

// handshake dials s and completes a TLS handshake, in the background.
func (s *handshakeServer) handshake(t *testing.T) <-chan error {
	return s.handshakeWith(&tls.Config{RootCAs: s.roots}, nil)
}

// handshakeWith dials s with cfg and completes a TLS handshake, in the
// background, passing the connection's state to check.
func (s *handshakeServer) handshakeWith(cfg *tls.Config, check func(tls.ConnectionState) error) <-chan error {
	done := make(chan error, 1)
	go func() {
		c, err := tls.Dial("tcp", s.addr, cfg)
		if err == nil {
			if check != nil {
				err = check(c.ConnectionState())
			}
			c.Close()
		}
		done <- err
	}()
	return done
}

func TestHandshakesAreBounded(t *testing.T) {
	s := serveHandshakes(t, 2, time.Minute)
	var clients []<-chan error
	for range 6 {
		clients = append(clients, s.handshake(t))
	}
	// Let one handshake through at a time once as many as may be are
	// being computed: with no bound, all six would be at once.
	for released := range 6 {
		want := int32(min(2, 6-released))
		require.Eventually(t, func() bool { return s.inside.Load() >= want }, 10*time.Second, time.Millisecond)
		s.gate <- struct{}{}
	}
	for _, c := range clients {
		require.NoError(t, <-c)
		require.NoError(t, <-s.errs)
	}
	assert.Equal(t, int32(2), s.most.Load(), "handshakes computed at once")
	assert.Zero(t, s.expired.Load(), "no wait expired")
}

// A client whose key shares make the server ask for another ClientHello
// (a HelloRetryRequest) gives its place back while that round trip goes,
// and waits for one again once its second ClientHello has arrived whole:
// a flood of such clients is bounded as any other.
func TestHandshakeBoundHoldsAcrossAHelloRetry(t *testing.T) {
	// A server that takes P-384 alone, which Go's clients list but send
	// no key share for: each handshake is asked again.
	s := serveHandshakes(t, 1, time.Minute, tls.CurveP384)
	retried := func(cs tls.ConnectionState) error {
		if cs.CurveID != tls.CurveP384 {
			return fmt.Errorf("the key exchange is %v", cs.CurveID)
		}
		return nil
	}
	first := s.handshakeWith(&tls.Config{RootCAs: s.roots}, retried)
	require.Eventually(t, func() bool { return s.inside.Load() == 1 }, 10*time.Second, time.Millisecond)
	// The first holds its place again since its second ClientHello came:
	// the next waits. (Without that, the next would take the place the
	// first gave back, ask again, and be computed beside it.)
	second := s.handshakeWith(&tls.Config{RootCAs: s.roots}, retried)
	require.Eventually(t, func() bool { return tunnel.HandshakesWaiting(s.bounded) == 1 || s.inside.Load() > 1 },
		10*time.Second, time.Millisecond)
	assert.Equal(t, int32(1), s.inside.Load(), "handshakes computed at once")
	s.gate <- struct{}{}
	s.gate <- struct{}{}
	for _, c := range []<-chan error{first, second} {
		require.NoError(t, recv(t, c))
		require.NoError(t, recv(t, s.errs))
	}
	assert.Equal(t, int32(1), s.most.Load(), "handshakes computed at once")
}

func TestHandshakeBoundIgnoresWhatHasNotSentItsHello(t *testing.T) {
	s := serveHandshakes(t, 1, time.Minute)
	// Connections that send nothing, or half a ClientHello (a record
	// header announcing 512 bytes, then 10 of them).
	for i := range 3 {
		c, err := net.Dial("tcp", s.addr)
		require.NoError(t, err)
		defer c.Close()
		if i > 0 {
			_, err = c.Write(append([]byte{22, 3, 1, 2, 0}, make([]byte, 10)...))
			require.NoError(t, err)
		}
	}
	done := s.handshake(t)
	select {
	case s.gate <- struct{}{}:
	case <-time.After(30 * time.Second):
		t.Fatal("a handshake waited behind connections that had not sent their ClientHello")
	}
	require.NoError(t, recv(t, done))
}

func TestHandshakeWaitEndsAtItsDeadline(t *testing.T) {
	s := serveHandshakes(t, 1, time.Second)
	first := s.handshake(t)
	require.Eventually(t, func() bool { return s.inside.Load() == 1 }, 10*time.Second, time.Millisecond)
	second := s.handshake(t)
	assert.ErrorIs(t, recv(t, s.errs), tunnel.ErrHandshakeWait, "the second, past the bound until its deadline")
	assert.Error(t, recv(t, second))
	assert.Equal(t, int32(1), s.expired.Load(), "OnHandshakeExpired")

	// The first goes on; its place is given back, and the next
	// handshake takes it.
	s.gate <- struct{}{}
	recv(t, first)
	recv(t, s.errs)
	third := s.handshake(t)
	s.gate <- struct{}{}
	require.NoError(t, recv(t, third))
	require.NoError(t, recv(t, s.errs))
}

// A handshake waiting for its place ends when its connection is closed
// (the relay shutting down), not at its deadline.
func TestHandshakeWaitEndsWhenItsConnectionCloses(t *testing.T) {
	s := serveHandshakes(t, 1, time.Hour)
	first := s.handshake(t)
	require.Eventually(t, func() bool { return s.inside.Load() == 1 }, 10*time.Second, time.Millisecond)
	<-s.conns
	second := s.handshake(t)
	c := <-s.conns
	require.Eventually(t, func() bool { return tunnel.HandshakesWaiting(s.bounded) == 1 }, 10*time.Second, time.Millisecond)
	c.Close()
	assert.ErrorIs(t, recv(t, s.errs), net.ErrClosed, "the waiting handshake ends with its connection")
	assert.Error(t, recv(t, second))
	assert.Zero(t, tunnel.HandshakesWaiting(s.bounded))

	s.gate <- struct{}{}
	require.NoError(t, recv(t, first))
	require.NoError(t, recv(t, s.errs))
}

// recv is what ch gives within 30 s: a handshake's end.
func recv(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("no handshake ended within 30 s")
		return nil
	}
}
