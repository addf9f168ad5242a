//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its ServeConn and NewClientConn on a connection the agent already holds are what the reversed roles need, and on Go 1.26 it is not a wrapper of net/http. This file is the only one of its side that names it. See PROTOCOL.md.

package tunnel

import (
	"math"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// The relay's side of the tunnel is an HTTP/2 client on a connection the
// agent dialed. These are the relay's only uses of x/net/http2's
// connection-level API, so that when that dependency moves (Go 1.27 makes
// it a wrapper of net/http's HTTP/2), this file is what changes.
type (
	h2Transport = http2.Transport
	// tunnelClient is one tunnel connection as the relay drives it.
	tunnelClient = http2.ClientConn
)

// newTunnelClient starts HTTP/2 as the client on an agent's connection,
// writing through a holdConn so that a request's HEADERS leave with its
// body.
func newTunnelClient(t *h2Transport, conn net.Conn, writeTimeout time.Duration) (*tunnelClient, error) {
	return t.NewClientConn(newHoldConn(conn, writeTimeout, len(http2.ClientPreface)))
}

// initialConnWindow is the receive window every HTTP/2 connection starts
// with (RFC 9113 §6.9.2).
const initialConnWindow = 65535

func newH2Transport(c *RelayConfig) (*h2Transport, error) {
	// x/net takes receive windows only from a net/http Transport's
	// HTTP2Config: its own defaults (4 MiB a stream, 1 GiB a connection)
	// let ~250 stalled downloads fill a connection's window, each pinning
	// 4 MiB of the relay. t1 carries the settings and is never used to
	// send anything.
	//
	// x/net sends the whole connection window as one WINDOW_UPDATE on top
	// of the 65,535 bytes every connection starts with: the sum must stay
	// within 2^31-1, or the agent ends the connection for a flow-control
	// error (which a per-stream window of 2 MiB or more used to cause).
	perConn := int64(c.MaxReceiveBufferPerStream) * DefaultMaxConcurrentStreams
	t1 := &http.Transport{HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerStream:     int(c.MaxReceiveBufferPerStream),
		MaxReceiveBufferPerConnection: int(min(perConn, math.MaxInt32-initialConnWindow)),
	}}
	t, err := http2.ConfigureTransports(t1)
	if err != nil {
		return nil, err
	}
	t.ReadIdleTimeout = c.PingInterval
	t.PingTimeout = c.PingTimeout
	t.WriteByteTimeout = c.WriteTimeout
	t.MaxHeaderListSize = c.MaxHeaderBytes
	// 64 KiB DATA frames from the agent: downloads 12-17 % faster than
	// the 16 KiB default in interleaved runs. Not larger: x/net keeps a
	// frame read buffer per connection as big as the largest frame seen,
	// and 1 MiB (15-25 % faster) would pin a mebibyte on each of
	// thousands of connections after one download.
	t.MaxReadFrameSize = 64 << 10
	// The agent compresses nothing on its own; leave bodies as sent.
	t.DisableCompression = true
	return t, nil
}
