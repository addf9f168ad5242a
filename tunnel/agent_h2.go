//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its ServeConn and NewClientConn on a connection the agent already holds are what the reversed roles need, and on Go 1.26 it is not a wrapper of net/http. This file is the only one of its side that names it. See PROTOCOL.md.

package tunnel

import (
	"context"
	"net"
	"net/http"

	"golang.org/x/net/http2"
)

// The agent's side of the tunnel is an HTTP/2 server on a connection it
// dialed. This is the agent's only use of x/net/http2, so that when that
// dependency moves (Go 1.27 makes it a wrapper of net/http's HTTP/2), this
// file is what changes.

// h2Server configures HTTP/2 on base with the agent's limits and returns
// the function that serves one tunnel connection with it until the
// connection ends.
func (a *Agent) h2Server(base *http.Server) (serve func(net.Conn, http.Handler), err error) {
	h2 := &http2.Server{
		MaxConcurrentStreams:         a.cfg.MaxConcurrentStreams,
		MaxUploadBufferPerStream:     a.cfg.MaxUploadBufferPerStream,
		MaxUploadBufferPerConnection: a.cfg.MaxUploadBufferPerConnection,
		ReadIdleTimeout:              a.cfg.PingInterval,
		PingTimeout:                  a.cfg.PingTimeout,
		WriteByteTimeout:             a.cfg.WriteTimeout,
	}
	if err := http2.ConfigureServer(base, h2); err != nil {
		return nil, err
	}
	return func(conn net.Conn, h http.Handler) {
		h2.ServeConn(conn, &http2.ServeConnOpts{Context: context.Background(), BaseConfig: base, Handler: h})
	}, nil
}
