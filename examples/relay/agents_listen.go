package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/cli"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// serveAgents serves agents' handshakes, and nothing else, on their own
// listener at addr until ctx ends. Its connections are bounded as the
// clients' are until an agent is accepted; the handshake is HTTP/1.1.
func serveAgents(ctx context.Context, addr string, relay *tunnel.Relay, tlsConfig *tls.Config, maxHeaderBytes int,
	bound tunnel.ClientListenerConfig, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/healthz", cli.OK)
	mux.Handle(tunnel.DefaultAgentPath, relay.AgentHandler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		TLSConfig:         tlsConfig, // ServeTLS works on a copy
		// The handshake is an HTTP/1.1 Upgrade; agents offer nothing else.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ln := tunnel.ClientListener(tcp, bound)
	log.Info("agents listening", "addr", ln.Addr().String())
	go func() {
		if err := httpx.ServeUntil(ctx, srv, ln, 10*time.Second); err != nil {
			log.Error("agent listener failed", "err", err)
		}
	}()
	return nil
}
