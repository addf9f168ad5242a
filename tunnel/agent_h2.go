package tunnel

import (
	"net"
	"net/http"

	"github.com/clusterconnect/clusterconnect/tunnel/internal/h2server"
)

// The agent's side of the tunnel is an HTTP/2 server on a connection it
// dialed: the project's own (package h2server), which runs each
// request's frames without x/net's serve loop and writer goroutine
// (BENCHMARKS.md, "The agent's own HTTP/2 server").

// h2Server returns the HTTP/2 server, with the agent's limits, that
// serves h on conn once its Serve is called; batch gathers what it writes
// before each flush into one write.
func (a *Agent) h2Server(conn net.Conn, batch h2server.Batcher, h http.Handler) *h2server.Conn {
	return h2server.New(conn, &h2server.Config{
		MaxConcurrentStreams:         a.cfg.MaxConcurrentStreams,
		MaxUploadBufferPerStream:     a.cfg.MaxUploadBufferPerStream,
		MaxUploadBufferPerConnection: a.cfg.MaxUploadBufferPerConnection,
		MaxUploadWindowPerStream:     a.cfg.MaxUploadWindowPerStream,
		// As net/http's servers count MaxHeaderBytes in HTTP/2: ten
		// fields' overhead more, which relays configured against x/net's
		// server expect.
		MaxHeaderBytes: a.cfg.MaxHeaderBytes + 10*32,
		PingInterval:   a.cfg.PingInterval,
		PingTimeout:    a.cfg.PingTimeout,
		WriteTimeout:   a.cfg.WriteTimeout,
		Batcher:        batch,
	}, h)
}
