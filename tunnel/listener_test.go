package tunnel_test

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
