//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation; this file serves the relay's clients with it, on the connections net/http hands over after TLS. See PROTOCOL.md.

package tunnel

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/hold"
	"golang.org/x/net/http2"
)

// clientMaxFrame is the largest frame ConfigureServer's HTTP/2 reads.
const clientMaxFrame = 16 << 10

// ConfigureServer sets up HTTP/2 on srv, the server that serves a
// Relay's clients, as the relay writes its tunnels: each connection is
// written through a short hold, so that an answer's HEADERS leave with
// its first DATA, one write and one wake-up of the client instead of two
// for a small answer (net/http's HTTP/2 server flushes the HEADERS on
// their own). Headers whose body comes later, as a watch's, leave after
// at most 100 µs.
//
// Where srv serves connections from a ClientListener (under its TLS), the
// records crypto/tls seals for each of the server's writes leave in one
// system call rather than one each: a 16 KiB DATA frame is a record and
// 9 bytes, and was two writes and two wake-ups of the client. A write
// holds at most 256 KiB in the batch; its write deadline is the server's.
// BENCHMARKS.md, "The relay's records to HTTP/2 clients".
//
// Call it before srv serves, after setting srv.HTTP2 and srv.IdleTimeout:
// their limits (streams, windows, WriteByteTimeout, the idle timeout)
// apply as they would to net/http's own HTTP/2. Frames from clients are
// limited to 16 KiB (HTTP/2's default; net/http's server takes 1 MiB),
// unless srv.HTTP2.MaxReadFrameSize says otherwise: a connection keeps a
// buffer as large as the largest frame it was sent. A held write that the
// hold's timer sends has srv.HTTP2.WriteByteTimeout to finish, or
// DefaultWriteTimeout. BENCHMARKS.md, "Clients speaking HTTP/2".
func ConfigureServer(srv *http.Server) error { return configureServer(srv, hold.For) }

func configureServer(srv *http.Server, holdFor time.Duration) error {
	// HTTP/2 reads a frame whole into a buffer that stays as large as the
	// largest frame the connection has sent, and x/net takes frames of up
	// to 1 MiB by default: any caller, before its token is looked at,
	// could make the relay keep a mebibyte for every connection it holds
	// open. 16 KiB, HTTP/2's own default, unless srv.HTTP2 says otherwise.
	h2 := &http2.Server{MaxReadFrameSize: clientMaxFrame}
	if err := http2.ConfigureServer(srv, h2); err != nil {
		return err
	}
	// An HTTP/1.x answer's writes find their connection's batch through
	// the request's context (clientWriter).
	prev := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prev != nil {
			ctx = prev(ctx, c)
		}
		if cc := clientConnUnder(c); cc != nil {
			ctx = context.WithValue(ctx, clientConnKey{}, cc)
		}
		return ctx
	}
	timeout := DefaultWriteTimeout
	if srv.HTTP2 != nil && srv.HTTP2.WriteByteTimeout > 0 {
		timeout = srv.HTTP2.WriteByteTimeout
	}
	srv.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		// net/http hands over its connection's base context (from
		// BaseContext and ConnContext) this way; x/net's own handler
		// does the same.
		var ctx context.Context
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		hc := hold.NewConn(batched(c), timeout, 0)
		hc.SetHold(holdFor)
		h2.ServeConn(&tlsHoldConn{hc, c}, &http2.ServeConnOpts{Context: ctx, Handler: h, BaseConfig: hs})
	}
	return nil
}

// tlsHoldConn is a hold.Conn over TLS that still tells HTTP/2 its TLS
// state: the server checks the version and cipher, and requests carry it.
type tlsHoldConn struct {
	*hold.Conn
	tls *tls.Conn
}

func (c *tlsHoldConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// clientTLS is a client's TLS connection over the relay's clientConn, as
// the relay's HTTP/2 server writes to it: the records of each write leave
// in one system call. The server sends DATA frames of the 16 KiB a client
// takes, 9 bytes over a record with their header, and crypto/tls wrote
// each as a full record and a 9-byte one, in two.
type clientTLS struct {
	*tls.Conn
	under *clientConn
}

func (c *clientTLS) Write(p []byte) (int, error) {
	c.under.batch.start()
	n, err := c.Conn.Write(p)
	if ferr := c.under.batch.flush(c.under.writeThrough); err == nil {
		err = ferr
	}
	return n, err
}

// Close closes the socket first while a batch's write is under way, as
// crypto/tls does for a write of its own in flight: its close_notify
// would otherwise wait behind the batch until the write deadline.
func (c *clientTLS) Close() error {
	if c.under.batch.flushing.Load() {
		c.under.TCPConn.Close()
	}
	return c.Conn.Close()
}

type clientConnKey struct{}

// clientConnUnder is the clientConn under c, a TLS connection from a
// ClientListener (a client's or an agent's); nil for any other.
func clientConnUnder(c net.Conn) *clientConn {
	if tc, ok := c.(*tls.Conn); ok {
		cc, _ := tc.NetConn().(*clientConn)
		return cc
	}
	return nil
}

// batched is c sending the records of each of its writes in one system
// call where it is a TLS connection from a ClientListener (clientTLS);
// c itself otherwise.
func batched(c net.Conn) net.Conn {
	if cc := clientConnUnder(c); cc != nil {
		return &clientTLS{Conn: c.(*tls.Conn), under: cc}
	}
	return c
}

// connOf is the ClientListener's connection req came on, if
// ConfigureServer's server serves it; nil otherwise.
func connOf(req *http.Request) *clientConn {
	cc, _ := req.Context().Value(clientConnKey{}).(*clientConn)
	return cc
}
