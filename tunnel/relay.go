package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/clusterconnect/clusterconnect/internal/h2client"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/logx"
	"github.com/clusterconnect/clusterconnect/internal/tracex"
)

// RelayConfig configures a Relay. A nil *RelayConfig is not valid: the
// Authenticator is required.
type RelayConfig struct {
	// Authenticator decides which agent may serve which cluster. Required.
	Authenticator Authenticator

	// ClientAuthorizer, if set, decides for every client request whether
	// it may reach its cluster, before any tunnel stream is opened for it.
	// Nil lets every request through: the agent side must then
	// authenticate each request itself (it should anyway).
	ClientAuthorizer ClientAuthorizer

	// TrustClientIDs keeps the request ID a client's request carries
	// (an Audit-ID header, such as a client proxy's) as the request's ID
	// at the relay, the agent and kube-apiserver's audit log. Without it
	// the relay gives every request an ID of its own, so that a caller
	// cannot choose what another request's records say; either way the
	// relay's answer names the ID (Audit-Id). Set it only where every
	// client the front door admits is trusted with that.
	TrustClientIDs bool

	// AgentPath is where ServeHTTP answers agents' handshakes; default
	// DefaultAgentPath. AgentHandler serves handshakes on any path.
	AgentPath string

	// MaxConnsPerCluster bounds the tunnel connections one cluster's
	// agents hold at this relay at once, those being set up included;
	// past it a handshake that authenticated is refused with 429 and
	// Retry-After, and the agent tries again later. Each connection holds
	// an HTTP/2 client, buffers and a descriptor, and an agent's
	// connection does not count against its listener's
	// ClientListenerConfig.MaxConns once accepted: this is what bounds
	// them. Default DefaultMaxConnsPerCluster; negative: no bound.
	MaxConnsPerCluster int

	// ReconnectRate is how many agent handshakes a second this relay asks
	// its agents to come back at after it restarts: each agent waits a
	// random moment within (agents held / ReconnectRate) seconds, told in
	// its handshake (HeaderReconnectWindow), so that a restart does not
	// bring every agent back in the same second, where their handshakes
	// time out and come back in waves. Default DefaultReconnectRate.
	ReconnectRate int
	// HandshakeTimeout bounds authenticating an agent and switching its
	// connection to HTTP/2. Default 10s. (The http.Server that serves the
	// relay bounds reading the handshake request: set its ReadHeaderTimeout.)
	HandshakeTimeout time.Duration

	// PingInterval is how long a tunnel connection may be silent before
	// the relay pings it, and PingTimeout how long it waits for the answer
	// before it drops the connection. Defaults 15s and 10s.
	PingInterval time.Duration
	PingTimeout  time.Duration
	// BusyPingAfter and BusyPingTimeout are the same while the connection
	// carries a request (a watch, an exec, a request waiting for its
	// answer): a black-holed connection is dropped within their sum, and
	// the requests on it end and release what they held. Defaults 2s and
	// 3s. An idle connection keeps the cheaper bounds above.
	BusyPingAfter   time.Duration
	BusyPingTimeout time.Duration
	// RetryWait bounds how long a request that may go once more (no body,
	// an idempotent method) waits for a live connection of its cluster
	// when none is left after its first attempt failed: the agent dials
	// again when its connections go dark. Default DefaultRetryWait.
	RetryWait time.Duration

	// WriteTimeout drops a tunnel connection on which a write has made no
	// progress for this long (a peer that stopped reading), and resets a
	// client's stream when writing to that client has made none for about
	// as long (between half of it and all of it): a client that stops
	// reading does not keep its share of the agent connection's window
	// and the relay's memory. Default 30s.
	WriteTimeout time.Duration

	// MaxReceiveBufferPerStream is how much of one response the relay
	// takes from an agent ahead of the client reading it; default
	// DefaultMaxReceiveBufferPerStream (64 KiB). A client that stops
	// reading pins this much relay memory (and one copy buffer) until
	// WriteTimeout resets its stream. The connection's window is given
	// back as data arrives, so stalled streams never close it on the
	// others. A larger window speeds single downloads over long round trips (one
	// stream moves at most a window per round trip) at that memory cost;
	// StreamWindowLimit does it only for clients that keep up.
	MaxReceiveBufferPerStream int32

	// StreamWindowLimit is how far one response's receive window may grow
	// while its client keeps up: the window doubles each time the client
	// took half of it in less than two round trips to the agent (the
	// window, not the client, was what held the stream back), and stays
	// grown until the stream ends. Past an eighth of StreamWindowBudget a
	// window grows only while half the budget stays free, so that windows
	// grown that far leave at least four others their eighth. Default
	// DefaultStreamWindowLimit (4 MiB); at or below
	// MaxReceiveBufferPerStream, windows never grow.
	StreamWindowLimit int32
	// StreamWindowBudget is how much all grown windows together may hold
	// beyond MaxReceiveBufferPerStream each: what clients that read fast
	// and then stop can make the relay hold, on top of one window each
	// (until WriteTimeout resets them). A stream gives its share back when
	// it ends. Default
	// DefaultStreamWindowBudget (8 MiB); negative: windows never grow.
	StreamWindowBudget int64

	// UpgradeTimeout bounds the wait for an agent's answer to an upgrade
	// request (kubectl exec, attach, port-forward): the agent must begin
	// its answer, and finish a refusal, within it. Default
	// DefaultUpgradeTimeout.
	UpgradeTimeout time.Duration

	// MaxHeaderBytes bounds header lists in the tunnel, counted as HTTP/2
	// counts them: the response headers the relay accepts from an agent,
	// and the request headers it sends (a larger request gets 431 and
	// never reaches the agent). Default DefaultMaxHeaderBytes, the agent's
	// default; set it to what the agents accept if they are set lower.
	MaxHeaderBytes uint32

	// Directory, if set, makes the relay one replica of a fleet behind
	// one address: it tells the directory which clusters it holds
	// connections for, and sends a request for a cluster it holds none
	// for to a replica that does, once (see PeerHandler). Nil: the relay
	// is alone and knows only its own connections.
	Directory Directory
	// PeerTLSConfig is the TLS client configuration for reaching other
	// replicas' peer listeners: this replica's certificate and the
	// fleet's peer CA as RootCAs. Required with Directory.
	PeerTLSConfig *tls.Config
	// PeerRootCAs, if set, is asked at each dial to another replica for
	// the pool its certificate is checked against, in place of
	// PeerTLSConfig.RootCAs: a fleet's peer CA read again when its file
	// changes takes effect from the next connection on.
	PeerRootCAs func() *x509.CertPool
	// ReplicaID names this replica to agents in the handshake answer, so
	// that an agent can spread its connections over replicas; with a
	// Directory that also implements ReplicaCounter, the answer says how
	// many replicas there are.
	ReplicaID string
	// Picker, if set, chooses which of a cluster's connections, and which
	// replica holding it, a request goes to (see Picker). Nil: the
	// relay's own choice.
	Picker Picker
	// Middleware, if set, wraps the transport the relay sends clients'
	// requests to their cluster with, once: a layer that knows what the
	// requests mean, such as package sessions' Watches, which ends a
	// watch whose stream breaks with a final ERROR event saying why. A
	// request's URL path is the cluster's, without the /clusters/{id}
	// prefix; ClusterID(req.Context()) names the cluster. An upgrade's
	// 101 answer has the upgraded connection as its Body (an
	// io.ReadWriteCloser); Middleware may wrap it (the relay reads the
	// cluster's bytes through the Body it gets back, and writes the
	// client's through it too, passing the client's half-close on with
	// its CloseWrite method if it has one that does not return
	// errors.ErrUnsupported), but must not answer an upgrade itself. Nil:
	// nothing between, at no cost.
	Middleware func(next http.RoundTripper) http.RoundTripper

	// Registerer, if set, receives the relay's Prometheus metrics,
	// named clusterconnect_relay_… (see the package doc); the caller
	// serves them. Nil keeps only Stats.
	Registerer prometheus.Registerer
	// MetricsPerCluster adds a cluster label to the request metrics, for
	// answers below 400 (which only clusters that exist give), so that a
	// caller cannot make series up. One series per cluster, class and
	// code: leave it off for many clusters.
	MetricsPerCluster bool

	// TracerProvider, if set, traces clients' requests (OpenTelemetry): a
	// span for the relay's hop, one for the ClientAuthorizer's check and
	// one for the tunnel to the agent, whose context goes to the agent as
	// W3C traceparent. The hop's span is a child of the client's only
	// with TrustClientIDs; otherwise it begins a trace of its own, linked
	// to the client's. Nil: no spans, and a client's traceparent passes
	// through untouched.
	TracerProvider trace.TracerProvider

	// Logger receives connection events; nil discards them. Credentials are
	// never logged.
	Logger *slog.Logger
}

// Relay accepts agents' tunnel connections and sends clients' requests down
// them. It is an http.Handler: ServeHTTP answers agents at AgentPath and
// clients under /clusters/{id}/, and AgentHandler and ClusterHandler serve
// either alone, for servers that keep agents and clients apart.
type Relay struct {
	cfg RelayConfig
	log *slog.Logger
	// episodes logs what anyone on the internet can make happen per
	// request (refused agents, a failing authorizer) once per episode.
	episodes *logx.Episodes
	h2       *h2client.Config
	peers    *peers // with a Directory
	// windowTold is the reconnect window the relay last told its agents
	// as it grew (tellGrownWindow).
	windowTold atomic.Int32
	reg        registry
	mw         http.RoundTripper // RelayConfig.Middleware around relayTransport
	// toClients counts upgrades still copying the cluster's bytes to
	// their clients (spliceClient); clientsInFlight, clients' requests
	// (upgrades included) not yet over.
	toClients       atomic.Int32
	clientsInFlight atomic.Int64
	upstreams       upstreamSet // the cluster ends of clients' upgrades
	// draining refuses agents' handshakes: they are to connect elsewhere.
	draining atomic.Bool
	stats    counters
	metrics  *metrics     // nil without RelayConfig.Registerer
	tracer   trace.Tracer // nil without RelayConfig.TracerProvider
}

// NewRelay returns a relay for cfg.
func NewRelay(cfg *RelayConfig) (*Relay, error) {
	if cfg == nil || cfg.Authenticator == nil {
		return nil, errors.New("tunnel: RelayConfig.Authenticator is required")
	}
	c := *cfg
	if c.AgentPath == "" {
		c.AgentPath = DefaultAgentPath
	}
	c.HandshakeTimeout = orDefault(c.HandshakeTimeout, DefaultRelayHandshakeTimeout)
	if c.ReconnectRate <= 0 {
		c.ReconnectRate = DefaultReconnectRate
	}
	c.PingInterval = orDefault(c.PingInterval, DefaultPingInterval)
	c.PingTimeout = orDefault(c.PingTimeout, DefaultPingTimeout)
	c.BusyPingAfter = orDefault(c.BusyPingAfter, DefaultBusyPingAfter)
	c.RetryWait = orDefault(c.RetryWait, DefaultRetryWait)
	c.BusyPingTimeout = orDefault(c.BusyPingTimeout, DefaultBusyPingTimeout)
	c.WriteTimeout = orDefault(c.WriteTimeout, DefaultWriteTimeout)
	c.UpgradeTimeout = orDefault(c.UpgradeTimeout, DefaultUpgradeTimeout)
	if c.MaxReceiveBufferPerStream <= 0 {
		c.MaxReceiveBufferPerStream = DefaultMaxReceiveBufferPerStream
	}
	if c.StreamWindowLimit == 0 {
		c.StreamWindowLimit = DefaultStreamWindowLimit
	}
	if c.StreamWindowBudget == 0 {
		c.StreamWindowBudget = DefaultStreamWindowBudget
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxConnsPerCluster == 0 {
		c.MaxConnsPerCluster = DefaultMaxConnsPerCluster
	}
	if c.ReplicaID != "" && ValidateClusterID(c.ReplicaID) != nil {
		return nil, fmt.Errorf("tunnel: RelayConfig.ReplicaID %q: letters, digits, '-', '_' and '.' only, at most %d", c.ReplicaID, MaxClusterIDLength)
	}
	if c.Directory != nil && c.PeerTLSConfig == nil {
		return nil, errors.New("tunnel: RelayConfig.PeerTLSConfig is required with a Directory")
	}
	log := logx.OrDiscard(c.Logger)
	r := &Relay{cfg: c, log: log, episodes: logx.NewEpisodes(log, 0), h2: h2client.NewConfig(h2client.Settings{InitialWindow: c.MaxReceiveBufferPerStream, WindowLimit: c.StreamWindowLimit,
		WindowBudget: c.StreamWindowBudget, WindowShare: int32(min(int64(c.StreamWindowLimit), c.StreamWindowBudget/8)), MaxHeaderList: c.MaxHeaderBytes, PingInterval: c.PingInterval, PingTimeout: c.PingTimeout,
		BusyPingAfter: c.BusyPingAfter, BusyPingTimeout: c.BusyPingTimeout, WriteTimeout: c.WriteTimeout})}
	r.reg.picker = c.Picker
	if c.Middleware != nil {
		r.mw = c.Middleware(relayTransport{r})
	}
	if rc, ok := c.Directory.(ReplicaCounter); ok && c.ReplicaID != "" {
		go r.watchFleetSize(rc, fleetSizeEvery)
	}
	if c.Directory != nil {
		r.peers = newPeers(&c, r.h2)
		r.reg.hold = c.Directory.Hold
	}
	var err error
	r.tracer = tracex.Tracer(c.TracerProvider)
	if r.metrics, err = newMetrics(c.Registerer, "relay", c.MetricsPerCluster, r.Stats); err != nil {
		return nil, fmt.Errorf("tunnel: registering metrics: %w", err)
	}
	return r, nil
}

// ServeHTTP serves agents' handshakes at the configured AgentPath and
// clients' requests under /clusters/{id}/; anything else is 404.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == r.cfg.AgentPath {
		r.serveAgent(w, req)
		return
	}
	r.ServeCluster(w, req)
}

// AgentHandler returns a handler that serves agents' handshakes on any path.
func (r *Relay) AgentHandler() http.Handler { return http.HandlerFunc(r.serveAgent) }

// ClusterHandler returns a handler for clients' requests under
// /clusters/{id}/. Mount it where clients reach it.
func (r *Relay) ClusterHandler() http.Handler { return http.HandlerFunc(r.ServeCluster) }

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	s := r.stats.snapshot()
	s.Clusters = r.reg.count()
	s.StreamWindowGrown = r.h2.WindowInUse()
	return s
}

// Conns describes the live tunnel connections.
func (r *Relay) Conns() []ConnInfo {
	var out []ConnInfo
	for _, c := range r.reg.all() {
		out = append(out, c.info())
	}
	return out
}

// Connected reports whether the cluster has at least one live connection.
func (r *Relay) Connected(clusterID string) bool { return r.reg.has(clusterID) }

// Reachable reports whether a request for the cluster can be carried now:
// it has a live connection here, or, in a fleet, the directory names
// another replica holding one.
func (r *Relay) Reachable(clusterID string) bool {
	return r.reg.has(clusterID) || (r.cfg.Directory != nil && len(r.cfg.Directory.Holders(clusterID)) > 0)
}

// Close stops the relay: every tunnel connection is dropped at once
// (in-flight requests fail), agents' handshakes are refused from then on
// (they reconnect elsewhere or later), and clients' requests, RoundTripper
// and DialContext fail with ErrRelayClosed (503 to HTTP clients). It does
// not stop the http.Server the relay is served by.
func (r *Relay) Close() error {
	reason := closedRelayClosed
	if r.draining.Load() {
		reason = closedDrained
	}
	for _, c := range r.reg.close() {
		c.conn.closeFor(reason)
		c.cc.Close()
	}
	if r.peers != nil {
		r.peers.close()
	}
	r.upstreams.close()
	// Upgrades whose cluster side just closed may have last words for
	// their clients (an exec's Status, from the Middleware): a moment to
	// write them before the process that called Close exits.
	for deadline := time.Now().Add(lastWordsWait); r.toClients.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// lastWordsWait bounds Close's wait for upgrades' last words.
const lastWordsWait = time.Second

// Disconnect closes every tunnel connection of clusterID, as when the
// cluster is no longer one the relay knows: its agents' handshakes are
// the Authenticator's to refuse from then on. Requests in flight on the
// connections fail (a Middleware that knows watches ends them in words;
// package access's Authorizer.EndCluster ends its sessions first, with
// the reason).
func (r *Relay) Disconnect(clusterID string) {
	for _, c := range r.reg.agentConns(clusterID, "") {
		c.conn.closeFor(closedRemoved)
		c.cc.Close()
	}
}

// Drain moves the relay's agents elsewhere before it stops: it refuses new
// handshakes (503, "draining"), asks every connected agent to replace its
// connections (an agent opens a new connection, which lands on another
// relay behind the same address, then sends GOAWAY on the old one, whose
// in-flight streams finish), and waits until no agent connection is left
// and its clients' requests are over (an exec or a watch of a client
// that holds its connection to this replica runs on, through the peer
// hop or the old connection), or ctx ends. Then it closes the relay as
// Close does, which ends what is left; it returns ctx's error if
// connections or requests were still open. Agents that do not know the
// request keep their connections until then.
func (r *Relay) Drain(ctx context.Context) error {
	r.draining.Store(true)
	for _, c := range r.reg.all() {
		go r.askToMove(ctx, c)
	}
	return r.closeWhen(ctx, func() bool { return len(r.reg.all()) == 0 && r.clientsInFlight.Load() == 0 })
}

// Shutdown stops a relay that has nowhere to move its agents, one alone:
// it refuses new handshakes, lets the streams in flight finish until none
// is left or ctx ends, then closes the relay as Close does, ending what is
// left (a watch, an exec). It returns ctx's error if streams were still
// open. A relay of a fleet drains instead (Drain).
func (r *Relay) Shutdown(ctx context.Context) error {
	r.draining.Store(true)
	return r.closeWhen(ctx, func() bool {
		return r.stats.streamsOpened.Load() == r.stats.streamsClosed.Load() && r.clientsInFlight.Load() == 0
	})
}

// closeWhen closes the relay once done says so, checked every 50 ms, or
// once ctx ends, whose error it then returns.
func (r *Relay) closeWhen(ctx context.Context, done func() bool) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var err error
	for !done() && err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-t.C:
		}
	}
	r.Close()
	return err
}

// fleetSizeEvery is how often a replica checks the size of its fleet, to
// tell its agents when it changed (watchFleetSize).
var fleetSizeEvery = time.Second

// watchFleetSize tells every connected agent the fleet's size when it
// changes, until the relay closes: agents that connected while the fleet
// was smaller, or while this replica's view was still loading, spread
// their connections then.
func (r *Relay) watchFleetSize(rc ReplicaCounter, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := rc.Replicas()
	for range t.C {
		if r.reg.closed.Load() {
			return
		}
		n := rc.Replicas()
		if n == last {
			continue
		}
		last = n
		for _, c := range r.reg.all() {
			go r.tellFleetSize(c, n)
		}
	}
}

// reconnectWindow is how many seconds this relay's agents should spread
// their reconnects over: the connections it holds over ReconnectRate.
func (r *Relay) reconnectWindow() int {
	return (r.stats.conns() + r.cfg.ReconnectRate - 1) / r.cfg.ReconnectRate
}

// tellGrownWindow keeps every agent's reconnect window at least half the
// relay's: it tells ac, just added, the window now if its handshake's
// was under half of it (others connected in between), and, when the
// window has doubled since the relay last told them all, every agent
// told less than half of it: agents that connected while the relay held
// few learn that it holds many. Doubling bounds the telling: a relay
// that grew to n connections told each at most about log2 n times, and
// nothing runs while it does not grow.
func (r *Relay) tellGrownWindow(ac *agentConn) {
	w := r.reconnectWindow()
	if w >= 2 && int(ac.window.Load())*2 < w {
		ac.window.Store(int32(w))
		go r.tellWindow(ac, w)
	}
	told := r.windowTold.Load()
	if w < 2 || int32(w) < 2*told || !r.windowTold.CompareAndSwap(told, int32(w)) {
		return
	}
	for _, c := range r.reg.all() {
		if int(c.window.Load())*2 <= w {
			c.window.Store(int32(w))
			go r.tellWindow(c, w)
		}
	}
}

// tellWindow sends the agent of c a stream saying the reconnect window.
func (r *Relay) tellWindow(c *agentConn, w int) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.UpgradeTimeout)
	defer cancel()
	r.control(ctx, c, http.Header{headerStreamKind: {streamWindow}, HeaderReconnectWindow: {strconv.Itoa(w)}})
}

// tellFleetSize sends the agent of c a fleet stream saying n.
func (r *Relay) tellFleetSize(c *agentConn, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.UpgradeTimeout)
	defer cancel()
	r.control(ctx, c, http.Header{headerStreamKind: {streamFleet}, HeaderReplicas: {strconv.Itoa(n)}})
}

// askToMove sends the agent of c a move stream.
func (r *Relay) askToMove(ctx context.Context, c *agentConn) {
	r.control(ctx, c, http.Header{headerStreamKind: {streamMove}})
}

// control sends the agent of c a control stream with h, which it answers
// at once. Its fields are never indexed: HPACK's table on a connection
// begins with its first indexed field, and an idle agent's connection,
// which carries nothing but control streams, has none to keep (about 1.2
// KiB a connection; BENCHMARKS.md).
func (r *Relay) control(ctx context.Context, c *agentConn, h http.Header) {
	req := (&http.Request{Method: http.MethodConnect, URL: &url.URL{Host: "tunnel.invalid"}, Host: "tunnel.invalid",
		Header: h}).WithContext(ctx)
	fields, err := h2client.RequestFields(req)
	if err != nil {
		r.log.Debug("could not tell an agent", "cluster", c.clusterID, "stream", h.Get(headerStreamKind), "err", err)
		return
	}
	for i := range fields {
		fields[i].Sensitive = true
	}
	if !c.cc.ReserveNewRequest() {
		return // going away already
	}
	resp, err := c.cc.RoundTripFields(req, fields)
	if err != nil {
		r.log.Debug("could not tell an agent", "cluster", c.clusterID, "stream", h.Get(headerStreamKind), "err", err)
		return
	}
	resp.Body.Close()
}

// serveAgent authenticates an agent's handshake and turns its connection
// into an HTTP/2 client connection towards the agent.
func (r *Relay) serveAgent(w http.ResponseWriter, req *http.Request) {
	if r.draining.Load() && !r.reg.closed.Load() {
		r.stats.handshakeFailed("draining")
		httpx.RetryAfter(w, time.Second)
		httpx.WriteStatus(w, req, http.StatusServiceUnavailable, "", "tunnel: this relay is draining; connect to another")
		return
	}
	if r.reg.closed.Load() {
		r.stats.handshakeFailed("relay-closed")
		httpx.RetryAfter(w, time.Second)
		httpx.WriteStatus(w, req, http.StatusServiceUnavailable, "", ErrRelayClosed.Error())
		return
	}
	hs, err := ParseHandshake(req)
	if err != nil {
		var ve *VersionError
		if errors.As(err, &ve) {
			r.stats.handshakeFailed("version")
			httpx.WriteStatus(w, req, http.StatusUpgradeRequired, "", err.Error())
			return
		}
		r.stats.handshakeFailed("bad-request")
		httpx.WriteStatus(w, req, http.StatusBadRequest, "", err.Error())
		return
	}
	log := r.log.With("cluster", hs.ClusterID, "agent", hs.AgentID, "remote", req.RemoteAddr)
	if req.ProtoMajor != 1 {
		r.stats.handshakeFailed("bad-request")
		httpx.WriteStatus(w, req, http.StatusBadRequest, hs.ClusterID, "tunnel: the agent handshake must use HTTP/1.1 (disable HTTP/2 in the agent's TLS config)")
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), r.cfg.HandshakeTimeout)
	defer cancel()
	if err := r.cfg.Authenticator.Authenticate(ctx, hs.ClusterID, hs.Credential); err != nil {
		reason := "auth-error"
		var ae *AuthError
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		r.stats.handshakeFailed(reason)
		r.episodes.Warn("agent rejected", "cluster", hs.ClusterID, "agent", hs.AgentID, "remote", req.RemoteAddr, "reason", reason, "err", err)
		httpx.WriteStatus(w, req, http.StatusUnauthorized, hs.ClusterID, fmt.Sprintf("tunnel: agent for cluster %q not authenticated", hs.ClusterID))
		return
	}
	if limit := r.cfg.MaxConnsPerCluster; !r.reg.reserve(hs.ClusterID, limit) {
		r.stats.handshakeFailed("too-many-connections")
		log.Warn("agent refused: its cluster holds all the connections it may", "max", limit)
		httpx.RetryAfter(w, 10*time.Second)
		httpx.WriteStatus(w, req, http.StatusTooManyRequests, hs.ClusterID,
			fmt.Sprintf("tunnel: cluster %q already holds %d tunnel connections to this relay, as many as it may; lower the agent's connections or raise the relay's bound", hs.ClusterID, limit))
		return
	}
	defer r.reg.unreserve(hs.ClusterID)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		r.stats.handshakeFailed("hijack")
		log.Error("cannot take over the agent's connection", "err", err)
		httpx.WriteStatus(w, req, http.StatusInternalServerError, hs.ClusterID, "tunnel: the relay's server cannot hijack connections")
		return
	}
	if err := r.startTunnel(conn, brw, hs, req.RemoteAddr, log); err != nil {
		r.stats.handshakeFailed("switch")
		log.Warn("tunnel connection failed to start", "err", err)
	}
}

// startTunnel answers an accepted agent's handshake with 101 and makes
// its connection a tunnel: the relay's HTTP/2 client on it, registered
// for the cluster.
func (r *Relay) startTunnel(conn net.Conn, brw *bufio.ReadWriter, hs Handshake, remote string, log *slog.Logger) error {
	// The server's deadlines were for the handshake request; the tunnel
	// relies on pings instead.
	deadline := time.Now().Add(r.cfg.HandshakeTimeout)
	conn.SetDeadline(deadline)
	resp := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + ProtocolV1 + "\r\n"
	window := r.reconnectWindow()
	if window > 1 {
		resp += HeaderReconnectWindow + ": " + strconv.Itoa(window) + "\r\n"
	}
	if id := r.cfg.ReplicaID; id != "" {
		resp += HeaderReplica + ": " + id + "\r\n"
		if rc, ok := r.cfg.Directory.(ReplicaCounter); ok {
			resp += HeaderReplicas + ": " + strconv.Itoa(rc.Replicas()) + "\r\n"
		}
	}
	resp += "\r\n"
	if _, err := io.WriteString(conn, resp); err != nil {
		conn.Close()
		return err
	}
	// What the relay writes to its agent (a request's body, in frames of
	// a record and more) leaves in one system call per write, as what it
	// writes to clients.
	nc := batched(conn)
	if n := brw.Reader.Buffered(); n > 0 {
		// The agent speaks only after the 101, but keep whatever came.
		nc = &bufferedConn{Conn: nc, r: io.MultiReader(io.LimitReader(brw.Reader, int64(n)), conn)}
	}
	ac := &agentConn{clusterID: hs.ClusterID, agentID: hs.AgentID, remote: remote, since: time.Now()}
	if window > 1 {
		ac.window.Store(int32(window)) // what its agent was told
	}
	tracked := &connCloser{Conn: nc, lostAfter: min(r.cfg.PingTimeout, r.cfg.BusyPingTimeout), onClose: func(reason string) {
		ac.closed.Store(true)
		r.reg.remove(ac)
		r.stats.connClosed(reason)
		log.Info("agent disconnected", "after", time.Since(ac.since).Round(time.Millisecond))
	}}
	r.stats.connsOpened.Add(1)
	ac.conn = tracked
	tracked.lastRead.Store(time.Now().UnixNano())
	cc, err := h2client.New(r.h2, tracked)
	if err != nil {
		tracked.Close()
		return err
	}
	conn.SetDeadline(time.Time{})
	ac.cc = cc
	// MaxConnsPerCluster bounds it from now on, not its listener.
	leaveClientBound(conn)
	if !r.reg.add(ac) {
		tracked.closeFor(closedRelayClosed)
		cc.Close()
		return ErrRelayClosed
	}
	if ac.closed.Load() {
		r.reg.remove(ac) // it died before it was added
	}
	log.Info("agent connected")
	r.tellGrownWindow(ac)
	return nil
}

// clusterPath splits /clusters/{id}/rest into id and /rest, on the escaped
// path so that the rest keeps its encoding.
func clusterPath(escaped string) (id, rest string, ok bool) {
	const prefix = "/clusters/"
	if !strings.HasPrefix(escaped, prefix) {
		return "", "", false
	}
	id, rest, _ = strings.Cut(escaped[len(prefix):], "/")
	if ValidateClusterID(id) != nil {
		return "", "", false
	}
	return id, "/" + rest, true
}
