package relay

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/prom"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// Server is a relay assembled for the internet: its listeners bounded and
// hardened, agents and callers authenticated from files it re-reads, a
// fleet's directory kept, metrics and health served, and a drain when it
// stops. Create it with New and call Run.
type Server struct {
	cfg     Config // defaults filled in
	log     *slog.Logger
	reg     *prometheus.Registry
	relay   *tunnel.Relay
	fleet   *fleet // nil for a relay alone
	ln      net.Listener
	agentLn net.Listener // nil without AgentListen

	reloads []func(context.Context) // file watchers Run starts
	refused atomic.Uint64           // connections reset at a listener's bound
	// handshakesExpired counts TLS handshakes whose wait for a place under
	// MaxHandshakes ended at their deadline.
	handshakesExpired atomic.Uint64
	// authz is the access policy's front door, when the Server made it.
	authz *access.Authorizer
}

// New checks cfg, reads the agents and policy files, connects to etcd for
// a fleet and opens the listeners, so that what is wrong is said before
// anything is served. Call Run, or Close to release what New took.
func New(cfg *Config) (*Server, error) { return newServer(cfg) }

func newServer(cfg *Config) (_ *Server, err error) {
	c := *cfg
	if c.TLSConfig == nil || (len(c.TLSConfig.Certificates) == 0 && c.TLSConfig.GetCertificate == nil) {
		return nil, errors.New("relay: a serving certificate is required (Config.TLSConfig)")
	}
	c.MaxHeaderBytes = cmp.Or(c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	if c.MaxHeaderBytes > tunnel.DefaultMaxHeaderBytes {
		return nil, fmt.Errorf("relay: MaxHeaderBytes must be at most %d, what agents accept", tunnel.DefaultMaxHeaderBytes)
	}
	c.MaxClientConns = cmp.Or(c.MaxClientConns, DefaultMaxClientConns)
	c.MaxHandshakes = cmp.Or(c.MaxHandshakes, DefaultMaxHandshakes())
	c.ClientSendBuffer = cmp.Or(c.ClientSendBuffer, tunnel.DefaultClientSendBuffer)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.StopGrace = cmp.Or(c.StopGrace, DefaultStopGrace)
	c.ReloadInterval = cmp.Or(c.ReloadInterval, DefaultReloadInterval)
	c.Tunnel.WriteTimeout = cmp.Or(c.Tunnel.WriteTimeout, tunnel.DefaultWriteTimeout)
	s := &Server{cfg: c, log: c.Logger, reg: c.Registry}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.reg == nil {
		s.reg = prom.NewRegistry()
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	var replays tunnel.ReplayCache // a fleet's replicas share theirs
	if c.Fleet != nil {
		if s.fleet, err = newFleet(c.Fleet, s.log); err != nil {
			return nil, err
		}
		replays = s.fleet.dir
		s.log.Info("relay replica of a fleet", "replica", s.fleet.id, "peer", s.fleet.advertise, "etcd", c.Fleet.Etcd.Endpoints)
	}
	rc := c.Tunnel
	if rc.Authenticator, err = s.agents(replays); err != nil {
		return nil, err
	}
	if rc.ClientAuthorizer, err = s.callers(); err != nil {
		return nil, err
	}
	rc.Logger, rc.Registerer, rc.TracerProvider = s.log, s.reg, c.TracerProvider
	if rc.Middleware == nil {
		rc.Middleware = Middleware
	}
	if s.fleet != nil {
		rc.Directory, rc.PeerTLSConfig, rc.ReplicaID = s.fleet.dir, s.fleet.clientTLS, s.fleet.id
		rc.PeerRootCAs = s.fleet.peerCA
	}
	if s.relay, err = tunnel.NewRelay(&rc); err != nil {
		return nil, err
	}
	if err := s.listen(); err != nil {
		return nil, err
	}
	s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "clusterconnect_relay_client_conns_refused_total",
		Help: "Connections reset at accept, past the relay's bound on client connections (on the agents' listener and a fleet's peer listener too).",
	}, func() float64 { return float64(s.refused.Load()) }))
	s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "clusterconnect_relay_handshake_waits_expired_total",
		Help: "TLS handshakes that waited for a place under the relay's bound on handshakes computed at once (-max-handshakes) until their deadline, and failed.",
	}, func() float64 { return float64(s.handshakesExpired.Load()) }))
	return s, nil
}

// agents returns the agents' authenticator the config names.
func (s *Server) agents(replays tunnel.ReplayCache) (tunnel.Authenticator, error) {
	c := &s.cfg
	switch {
	case c.AgentsFile != "" && c.Agents != nil:
		return nil, errors.New("relay: give an agents file or an Authenticator, not both")
	case c.Agents != nil:
		return c.Agents, nil
	case c.AgentsFile == "":
		return nil, errors.New("relay: an agents file is required: which clusters may connect, and how they prove it")
	}
	a, err := NewAgents(AgentsConfig{PublicURL: c.PublicURL, Replays: replays, Logger: s.log})
	if err != nil {
		return nil, err
	}
	var known map[string]bool
	apply := func(b []byte) (int, error) {
		l, err := ParseAgentList(b)
		if err == nil {
			err = a.Set(l)
		}
		if err != nil {
			return 0, err
		}
		now := make(map[string]bool, len(l.Clusters))
		for id := range l.Clusters {
			now[id] = true
		}
		for id := range known {
			if !now[id] {
				s.removed(id)
			}
		}
		known = now
		return len(l.Clusters), nil
	}
	if err := s.reload(c.AgentsFile, "agents file", apply); err != nil {
		return nil, err
	}
	return a, nil
}

// errClusterRemoved ends the sessions of a cluster taken out of the
// agents file.
var errClusterRemoved = &tunnel.AccessError{Code: http.StatusServiceUnavailable, Reason: "cluster-removed",
	Message: "the cluster was removed from the relay: its agents are disconnected and the session was ended"}

// removed ends the sessions of a cluster the agents file no longer lists,
// saying so, and closes its agents' connections: new requests would find
// it disconnected.
func (s *Server) removed(id string) {
	if s.relay == nil {
		return // still reading the files at New
	}
	s.log.Info("cluster removed from the agents file: ending its sessions and disconnecting its agents", "cluster", id)
	if s.authz != nil {
		s.authz.EndCluster(id, errClusterRemoved)
	}
	s.relay.Disconnect(id)
}

// callers returns the front door the config names; nil lets every
// request through.
func (s *Server) callers() (tunnel.ClientAuthorizer, error) {
	c := &s.cfg
	n := 0
	for _, set := range []bool{c.PolicyFile != "", c.Callers != nil, c.InsecureSkipClientAuth} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		return nil, errors.New("relay: give exactly one of an access policy file, a ClientAuthorizer, or InsecureSkipClientAuth")
	case c.InsecureSkipClientAuth:
		s.log.Warn("client requests are not authenticated at the relay: anyone who can reach it can send requests to every connected cluster's agent")
		return nil, nil
	case c.Callers != nil:
		return c.Callers, nil
	case c.Verifier == nil:
		return nil, errors.New("relay: an access policy needs a token verifier: the issuers and audiences callers' tokens must have")
	}
	var authz *access.Authorizer
	apply := func(b []byte) (int, error) {
		p, err := s.policy(b)
		switch {
		case err != nil:
		case authz == nil:
			var ended access.EndedSessions // a fleet's replicas share theirs
			if s.fleet != nil {
				ended = s.fleet.dir
			}
			authz, err = access.New(&access.Config{Verifier: c.Verifier, Policy: p, Logger: s.log, GroupResolver: c.GroupResolver, EndedSessions: ended})
		default:
			err = authz.SetPolicy(p)
		}
		if err != nil {
			return 0, err
		}
		return len(p.Clusters), nil
	}
	if err := s.reload(c.PolicyFile, "access policy", apply); err != nil {
		return nil, err
	}
	s.authz = authz
	return authz, nil
}

// policy reads a policy file's contents, with the limits it leaves out
// taken from Config.Limits.
func (s *Server) policy(b []byte) (*access.Policy, error) {
	p, err := access.ParsePolicy(b)
	if err != nil {
		return nil, err
	}
	p.Limits = p.Limits.Or(s.cfg.Limits)
	return p, p.Validate()
}

// reload applies the file at path now, and has Run re-apply it whenever
// it changes.
func (s *Server) reload(path, what string, apply func([]byte) (int, error)) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("relay: %s: %w", what, err)
	}
	if _, err := apply(b); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	s.reloads = append(s.reloads, func(ctx context.Context) {
		watchFile(ctx, path, b, s.cfg.ReloadInterval, s.log, what, apply)
	})
	return nil
}

// listen opens the clients' and agents' listeners, wrapped in their
// bounds.
func (s *Server) listen() error {
	c := &s.cfg
	open := func(ln net.Listener, addr, which string) (net.Listener, error) {
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", addr); err != nil {
				return nil, err
			}
		}
		return tunnel.ClientListener(ln, s.bound(which)), nil
	}
	var err error
	if c.AgentListen != "" || c.AgentListener != nil {
		if s.agentLn, err = open(c.AgentListener, c.AgentListen, "agent"); err != nil {
			return err
		}
	}
	s.ln, err = open(c.Listener, cmp.Or(c.Listen, DefaultListen), "client")
	return err
}

// bound is the bounds of the listener named which ("client", "agent" or
// "peer").
func (s *Server) bound(which string) tunnel.ClientListenerConfig {
	c := &s.cfg
	b := tunnel.ClientListenerConfig{WriteTimeout: c.Tunnel.WriteTimeout, MaxConns: max(c.MaxClientConns, 0),
		MaxHandshakes: max(c.MaxHandshakes, 0), OnRefused: s.onRefused(which), OnHandshakeExpired: s.onHandshakeExpired(which)}
	if which == "client" {
		b.SendBuffer = max(c.ClientSendBuffer, 0)
	}
	return b
}

// onRefused counts a connection reset at a listener's bound, and says so
// now and then.
func (s *Server) onRefused(which string) func() {
	return func() {
		if n := s.refused.Add(1); n%1000 == 1 {
			s.log.Warn(which+" connections at their bound; resetting new ones", "max", s.cfg.MaxClientConns, "refused", n)
		}
	}
}

// onHandshakeExpired counts a TLS handshake that found no place under
// MaxHandshakes before its deadline, and says so now and then.
func (s *Server) onHandshakeExpired(which string) func() {
	return func() {
		if n := s.handshakesExpired.Add(1); n%1000 == 1 {
			s.log.Warn("TLS handshakes on the "+which+" listener waited past their deadline for a place; raise -max-handshakes if the relay's cores are not busy",
				"max", s.cfg.MaxHandshakes, "expired", n)
		}
	}
}

// Relay returns the tunnel relay the server runs, for importers that
// also route requests themselves (Relay.RoundTripper, Relay.DialContext).
func (s *Server) Relay() *tunnel.Relay { return s.relay }

// Addr is the clients' listener's address; AgentAddr the agents', or nil
// when they share the clients'.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// AgentAddr is the agents' own listener's address, or nil.
func (s *Server) AgentAddr() net.Addr {
	if s.agentLn == nil {
		return nil
	}
	return s.agentLn.Addr()
}

// Close releases the listeners and the fleet's etcd client of a Server
// that was never run.
func (s *Server) Close() error {
	for _, ln := range []net.Listener{s.ln, s.agentLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if s.fleet != nil {
		s.fleet.close()
	}
	return nil
}

// Run serves until ctx ends, then stops (see Config.DrainTimeout and
// Config.StopGrace): a replica of a fleet leaves the directory and moves
// its agents to another replica; a relay alone lets requests in flight
// finish for a few seconds and ends the rest.
func (s *Server) Run(ctx context.Context) error {
	for _, r := range s.reloads {
		go r(ctx)
	}
	var left <-chan struct{} // closed once a replica has left the fleet
	if s.fleet != nil {
		var err error
		if left, err = s.fleet.serve(ctx, s.relay, s.bound("peer"), s.log); err != nil {
			return err
		}
	}
	if s.cfg.MetricsListen != "" {
		mux := http.NewServeMux()
		for _, p := range []string{"/healthz", "/livez", "/readyz"} {
			mux.Handle(p, httpx.OK)
		}
		mux.Handle("/metrics", prom.Handler(s.reg))
		go httpx.ServeSide(ctx, s.cfg.MetricsListen, mux, s.log, "metrics")
	}
	var front http.Handler = s.relay // agents and clients
	if s.agentLn != nil {
		front = s.relay.ClusterHandler()
		go s.serveAgents(ctx)
	}
	srv, err := s.clientServer(front)
	if err != nil {
		return err
	}
	s.log.Info("relay listening", "addr", s.ln.Addr().String())
	stopped := make(chan struct{})
	context.AfterFunc(ctx, func() {
		defer close(stopped)
		s.stop(context.WithoutCancel(ctx))
	})
	// A relay alone gives its clients' connections no longer than its
	// requests in flight to end: nothing will move them anywhere.
	grace := 10 * time.Second
	if s.fleet == nil {
		grace = s.cfg.StopGrace
	}
	err = httpx.ServeUntil(ctx, srv, s.ln, grace)
	if left != nil {
		<-left
	}
	if ctx.Err() != nil {
		<-stopped
	}
	return err
}

// stop ends the relay once Run's context has ended. A replica of a fleet
// (it has left the directory) asks its agents to move to another replica
// and gives their streams up to DrainTimeout; a relay alone refuses new
// agents, gives requests in flight up to StopGrace, and ends the rest.
func (s *Server) stop(ctx context.Context) {
	if s.fleet == nil {
		s.log.Info("stopping", "grace", s.cfg.StopGrace)
		ctx, cancel := context.WithTimeout(ctx, s.cfg.StopGrace)
		defer cancel()
		if err := s.relay.Shutdown(ctx); err != nil {
			s.log.Warn("requests still in flight at the stop's deadline; ended", "err", err)
		}
		s.log.Info("shutting down")
		return
	}
	s.log.Info("draining", "timeout", s.cfg.DrainTimeout)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
	defer cancel()
	if err := s.relay.Drain(ctx); err != nil {
		s.log.Warn("agents still connected at the drain deadline; closed", "err", err)
	}
	s.log.Info("shutting down")
}

// clientServer is the HTTP server of the clients' listener.
func (s *Server) clientServer(front http.Handler) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle("/healthz", httpx.OK)
	mux.Handle("/", front)
	if s.authz != nil {
		mux.Handle("POST "+RenewPath+"{cluster}", s.authz.RenewHandler())
		mux.Handle("GET "+ClustersPath, s.authz.ClustersHandler(s.relay.Reachable))
		mux.Handle("GET "+ChallengePath+"{cluster}", s.authz.ChallengeHandler())
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// An idle kept-alive connection is a descriptor and a goroutine
		// held for nothing.
		IdleTimeout: 90 * time.Second,
		// Under the agents' limit, so what the relay accepts they accept.
		MaxHeaderBytes: s.cfg.MaxHeaderBytes,
		TLSConfig:      tunnel.LimitHandshakes(s.cfg.TLSConfig),
		// A client's stalled upload must not hold the whole connection's
		// window: the per-connection buffer is many per-stream ones.
		// An HTTP/2 client that stops reading altogether loses its
		// connection, not only its streams.
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 20, MaxReceiveBufferPerConnection: 32 << 20,
			WriteByteTimeout: s.cfg.Tunnel.WriteTimeout},
	}
	// kubectl speaks HTTP/2: send each answer's headers with its body.
	if err := tunnel.ConfigureServer(srv); err != nil {
		return nil, err
	}
	return srv, nil
}

// serveAgents serves agents' handshakes, and nothing else, on their own
// listener until ctx ends. Its connections are bounded as the clients'
// are until an agent is accepted; the handshake is HTTP/1.1.
func (s *Server) serveAgents(ctx context.Context) {
	mux := http.NewServeMux()
	mux.Handle("/healthz", httpx.OK)
	mux.Handle(tunnel.DefaultAgentPath, s.relay.AgentHandler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		TLSConfig:         tunnel.LimitHandshakes(s.cfg.TLSConfig),
		// The handshake is an HTTP/1.1 Upgrade; agents offer nothing else.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	s.log.Info("agents listening", "addr", s.agentLn.Addr().String())
	if err := httpx.ServeUntil(ctx, srv, s.agentLn, 10*time.Second); err != nil {
		s.log.Error("agent listener failed", "err", err)
	}
}
