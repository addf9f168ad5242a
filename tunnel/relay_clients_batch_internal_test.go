//lint:file-ignore SA1019 the client here is x/net's HTTP/2, as kubectl's (client-go configures it).

package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A download an HTTP/2 client takes from the relay's server leaves in a
// write per DATA frame, not one per TLS record: a frame of 16 KiB, as the
// relay forwards a tunnel's, is 9 bytes over a record with its header,
// and each frame's last record had a system call, and a wake-up of the
// client, of its own. The body arrives whole.
func TestHTTP2ClientsGetAFrameInOneWrite(t *testing.T) {
	// Within the client's first stream window (4 MiB), so that no frame
	// is cut short waiting for it to grow.
	const size = 3 << 20
	body := make([]byte, size)
	for i := range body {
		body[i] = byte(i * 7)
	}
	var writes, before atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		before.Store(writes.Load()) // the handshake's, the settings
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for p := body; len(p) > 0; p = p[min(len(p), 32<<10):] {
			if _, err := w.Write(p[:min(len(p), 32<<10)]); err != nil {
				return
			}
		}
	})
	ca, cert := relayCert(t)

	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := ClientListener(tcp, ClientListenerConfig{})
	ln.(*clientListener).writes = &writes
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{WriteByteTimeout: DefaultWriteTimeout}}
	require.NoError(t, ConfigureServer(srv))
	go srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}))
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	// x/net's HTTP/2 client, as kubectl's, taking frames of HTTP/2's
	// default 16 KiB, as kubectl 1.32's does.
	tr := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, MaxReadFrameSize: 16 << 10}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Get("https://localhost:" + strconv.Itoa(tcp.Addr().(*net.TCPAddr).Port) + "/download")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 2, resp.ProtoMajor)
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	require.NoError(t, err)
	require.EqualValues(t, size, n)
	want := sha256.Sum256(body)
	assert.Equal(t, want[:], got.Sum(nil), "the body arrived changed")
	// 16 KiB frames: 64 a MiB, 128 when each frame's two records are
	// written apart.
	perMiB := float64(writes.Load()-before.Load()) / (size >> 20)
	assert.Less(t, perMiB, 96.0, "the relay's writes per MiB downloaded")
	t.Logf("%.1f writes per MiB", perMiB)
}

// Closing a client's connection while a batch's write is stuck (the
// client stopped reading) fails that write at once, as for the agent's
// (TestClosingFailsAStuckBatchAtOnce).
func TestClosingAClientFailsAStuckBatchAtOnce(t *testing.T) {
	server, cc, _ := clientPair(t)
	conn := &clientTLS{Conn: server, under: cc}

	// The client reads nothing more: writes, each of less than a batch
	// holds (so that crypto/tls's own write is over when the batch is
	// written), go on until one blocks in its batch's write.
	wrote := make(chan error, 1)
	go func() {
		p := make([]byte, 128<<10)
		for {
			if _, err := conn.Write(p); err != nil {
				wrote <- err
				return
			}
		}
	}()
	stuck := func() bool {
		if !cc.batch.flushing.Load() {
			return false
		}
		time.Sleep(20 * time.Millisecond) // a write that goes on is over by then
		return cc.batch.flushing.Load()
	}
	require.Eventually(t, stuck, 10*time.Second, time.Millisecond, "no batch's write blocked")

	conn.Close()
	err := <-wrote
	require.Error(t, err)
	assert.ErrorIs(t, err, net.ErrClosed, "the stuck write failed because the connection closed, not by a deadline")
}

// An HTTP/2 client that stops reading a download loses its connection
// after the write timeout with the batch as without it: the batch's write
// has the server's write deadline, the handler's writes fail, and the
// bytes the client never read are dropped with a reset rather than
// trickled to it.
func TestHTTP2ClientThatStopsReadingIsCutOff(t *testing.T) {
	ca, cert := relayCert(t)
	ended := make(chan error, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				ended <- err
				return
			}
		}
	})
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := ClientListener(tcp, ClientListenerConfig{SendBuffer: 64 << 10, WriteTimeout: 300 * time.Millisecond})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{WriteByteTimeout: 300 * time.Millisecond}}
	require.NoError(t, ConfigureServer(srv))
	go srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}))
	t.Cleanup(func() { srv.Close() })

	// A client that asks for the download, gives the server all the
	// window HTTP/2 allows, then reads nothing at all: the server's
	// writes, not its flow control, are what stall.
	conn, err := tls.Dial("tcp", tcp.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}})
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(conn, conn)
	require.NoError(t, fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}))
	require.NoError(t, fr.WriteWindowUpdate(0, 1<<31-1-65535))
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "localhost"}, {":path", "/endless"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	require.NoError(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}))
	raw := conn.NetConn()

	require.Error(t, <-ended, "the handler's write failed") // a hang here fails the test by timeout
	// What the client's socket still holds, then the reset.
	raw.SetReadDeadline(time.Now().Add(time.Minute))
	_, err = io.Copy(io.Discard, raw)
	assert.ErrorIs(t, err, syscall.ECONNRESET, "the connection was reset, not closed after every byte")
}

// clientPair is a TLS connection as the relay serves a client on a
// ClientListener (server, over cc) and its client's end.
func clientPair(t *testing.T) (server *tls.Conn, cc *clientConn, client *tls.Conn) {
	t.Helper()
	ca, cert := relayCert(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := ClientListener(tcp, ClientListenerConfig{})
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan *tls.Conn, 1)
	go func() {
		defer close(accepted)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		server := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		if server.Handshake() == nil {
			accepted <- server
		}
	}()
	client, err = tls.Dial("tcp", tcp.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	server = <-accepted
	require.NotNil(t, server, "the handshake failed")
	t.Cleanup(func() { server.Close() })
	return server, server.NetConn().(*clientConn), client
}

// relayCert is a CA and a certificate it issued for a relay on loopback.
func relayCert(t *testing.T) (*pki.CA, tls.Certificate) {
	t.Helper()
	ca, err := pki.NewCA("batch test CA")
	require.NoError(t, err)
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	require.NoError(t, err)
	cert, err := leaf.TLSCertificate()
	require.NoError(t, err)
	return ca, cert
}

// A client's batch of a 32 KiB copy's records (and an HTTP/1.1 answer's
// head) keeps a buffer of that size, not of the agent's 64 KiB frames: it
// is what each client that stops reading makes the relay hold until the
// write timeout, besides the copy buffer and the stream's window.
func TestAClientsBatchKeepsACopysRecords(t *testing.T) {
	server, cc, client := clientPair(t)

	cc.batch.start()
	_, err := server.Write(make([]byte, 200+32<<10)) // an answer's head and a copy
	require.NoError(t, err)
	held := cap(*cc.batch.buf)
	require.NoError(t, cc.batch.flush(cc.writeThrough))
	assert.LessOrEqual(t, held, 33<<10, "the buffer a stalled client's batch would keep")
	got := make([]byte, 200+32<<10)
	_, err = io.ReadFull(client, got)
	require.NoError(t, err, "the batch arrived whole")
}
