package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"golang.org/x/net/http/httpproxy"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/logx"
	"github.com/clusterconnect/clusterconnect/tunnel/internal/h2server"
)

// AgentConfig configures an Agent. Zero fields take the defaults given.
type AgentConfig struct {
	// RelayURL is the relay's agent endpoint, https://host[:port][/path];
	// an empty path means DefaultAgentPath. Required.
	RelayURL string
	// ClusterID is the cluster this agent serves. Required.
	ClusterID string
	// Credential supplies the handshake credential: a SecretCredential or an
	// *AssertionCredential (whose empty Audience becomes
	// AssertionAudience(RelayURL)). Required.
	Credential Credential
	// Handler serves the requests that arrive through the tunnel. Raw
	// streams (client upgrades, Relay.DialContext) reach it as HTTP/1.1
	// requests on a connection it may hijack. Required.
	Handler http.Handler

	// AgentID names this agent in the relay's logs; default host name and
	// a random suffix.
	AgentID string
	// TLSConfig for the connection to the relay: RootCAs for a private CA,
	// ServerName to override SNI, Certificates for a client certificate.
	// NextProtos is overwritten.
	TLSConfig *tls.Config
	// Proxy chooses an HTTP proxy for the relay URL. Default: HTTPS_PROXY,
	// HTTP_PROXY and NO_PROXY as they are when NewAgent is called.
	Proxy func(*http.Request) (*url.URL, error)
	// DialContext, if set, opens the connection to the relay (or to the
	// proxy) instead of a net.Dialer: a dialer of the importer's own, or
	// an in-memory network in tests. TLS and the handshake go over it.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// Connections is how many tunnel connections the agent keeps open;
	// default 2, so one can fail or drain while the other serves.
	Connections int
	// MinBackoff and MaxBackoff bound the wait before reconnecting
	// (exponential with full jitter); defaults 1s and 30s. A connection that
	// lasted StableAfter (default 30s) resets the backoff.
	MinBackoff, MaxBackoff, StableAfter time.Duration
	// HandshakeTimeout bounds dialing, TLS and the handshake; default 15s.
	HandshakeTimeout time.Duration
	// PingInterval, PingTimeout, WriteTimeout: as in RelayConfig, on the
	// agent's side. Defaults DefaultAgentPingInterval (2 s),
	// DefaultAgentPingTimeout (3 s), DefaultWriteTimeout (30 s). A
	// connection dropped for an unanswered ping is dialed again at once.
	PingInterval, PingTimeout, WriteTimeout time.Duration
	// BusyDeadAfter: a connection that carries a request and on which
	// nothing arrived for this long is dropped (and dialed again). The
	// relay pings a busy connection every RelayConfig.BusyPingAfter, so
	// a live one is never this silent. Default DefaultBusyPingAfter +
	// DefaultBusyPingTimeout (5 s); it must exceed the relay's
	// BusyPingAfter.
	BusyDeadAfter time.Duration
	// MaxConcurrentStreams per connection; default 2000 (watches hold a
	// stream each).
	MaxConcurrentStreams uint32
	// MaxUploadBufferPerStream is how much of one request body the agent
	// buffers before the relay must wait (default 256 KiB); per connection
	// (default 16 MiB) it bounds all of them together. The per-connection
	// buffer is many times the per-stream one, so a stalled stream (an exec
	// nobody reads) cannot take the whole connection's window.
	MaxUploadBufferPerStream     int32
	MaxUploadBufferPerConnection int32
	// MaxUploadWindowPerStream is how far one request body's buffer
	// grows (default 4 MiB), doubling while the upstream reads the body
	// as fast as the buffer lets it come over the relay's round trip: an
	// upload's speed is its window per round trip. All of a connection's
	// streams grow by at most half MaxUploadBufferPerConnection together,
	// and past an eighth of that only while half of it is left, so that
	// large buffers leave others their eighth; a value at most
	// MaxUploadBufferPerStream: buffers never grow.
	MaxUploadWindowPerStream int32
	// MaxHeaderBytes bounds request headers; default
	// DefaultMaxHeaderBytes. The relay's RelayConfig.MaxHeaderBytes must
	// not be larger, or requests between the two limits fail.
	MaxHeaderBytes int
	// DrainTimeout bounds how long Run waits for in-flight streams after
	// its context ends; default 30s.
	DrainTimeout time.Duration
	// Registerer, if set, receives the agent's Prometheus metrics, named
	// clusterconnect_agent_… (see the package doc); the caller serves
	// them. Nil keeps only Stats.
	Registerer prometheus.Registerer

	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// Agent keeps tunnel connections to a relay open and serves what arrives on
// them. Create it with NewAgent and call Run.
type Agent struct {
	cfg     AgentConfig
	relay   *url.URL
	log     *slog.Logger
	h1      *http.Server // serves raw streams
	stats   counters
	metrics *metrics // nil without AgentConfig.Registerer

	answerBufs atomic.Int32 // large answers' buffers lent (agent_answer.go)

	closing   chan struct{}
	closeOnce sync.Once
	cycle     chan chan struct{}

	mu    sync.Mutex
	conns map[*tunnelConn]struct{}
	slots sync.WaitGroup

	upMu sync.Mutex
	upCh chan struct{} // closed when a slot connects (up)
}

// NewAgent checks cfg and returns an agent. It does not connect.
func NewAgent(cfg *AgentConfig) (*Agent, error) {
	if cfg == nil {
		return nil, errors.New("tunnel: nil AgentConfig")
	}
	c := *cfg
	relay, err := url.Parse(c.RelayURL)
	if err != nil || relay.Scheme != "https" || relay.Host == "" {
		return nil, fmt.Errorf("tunnel: RelayURL %q must be an https:// URL", c.RelayURL)
	}
	if relay.Path == "" || relay.Path == "/" {
		relay.Path = DefaultAgentPath
	}
	if err := ValidateClusterID(c.ClusterID); err != nil {
		return nil, err
	}
	if c.Credential == nil {
		return nil, errors.New("tunnel: AgentConfig.Credential is required")
	}
	if c.Handler == nil {
		return nil, errors.New("tunnel: AgentConfig.Handler is required")
	}
	if ac, ok := c.Credential.(*AssertionCredential); ok && ac.Audience == "" {
		// Bind assertions to the relay dialed: the caller's value stays
		// as it was.
		cp := *ac
		if cp.Audience, err = AssertionAudience(c.RelayURL); err != nil {
			return nil, err
		}
		c.Credential = &cp
	}
	if c.AgentID == "" {
		host, _ := os.Hostname()
		suffix := make([]byte, 4)
		rand.Read(suffix)
		c.AgentID = host + "-" + hex.EncodeToString(suffix)
	}
	if c.Proxy == nil {
		proxy := httpproxy.FromEnvironment().ProxyFunc()
		c.Proxy = func(r *http.Request) (*url.URL, error) { return proxy(r.URL) }
	}
	if c.Connections <= 0 {
		c.Connections = DefaultConnections
	}
	c.MinBackoff = orDefault(c.MinBackoff, DefaultMinBackoff)
	c.MaxBackoff = orDefault(c.MaxBackoff, DefaultMaxBackoff)
	c.StableAfter = orDefault(c.StableAfter, DefaultStableAfter)
	c.HandshakeTimeout = orDefault(c.HandshakeTimeout, DefaultAgentHandshakeTimeout)
	c.PingInterval = orDefault(c.PingInterval, DefaultAgentPingInterval)
	c.PingTimeout = orDefault(c.PingTimeout, DefaultAgentPingTimeout)
	c.BusyDeadAfter = orDefault(c.BusyDeadAfter, DefaultBusyPingAfter+DefaultBusyPingTimeout)
	c.WriteTimeout = orDefault(c.WriteTimeout, DefaultWriteTimeout)
	c.DrainTimeout = orDefault(c.DrainTimeout, DefaultDrainTimeout)
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.MaxUploadBufferPerStream <= 0 {
		c.MaxUploadBufferPerStream = DefaultMaxUploadBufferPerStream
	}
	if c.MaxUploadBufferPerConnection <= 0 {
		c.MaxUploadBufferPerConnection = DefaultMaxUploadBufferPerConnection
	}
	if c.MaxUploadWindowPerStream == 0 {
		c.MaxUploadWindowPerStream = DefaultMaxUploadWindowPerStream
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	lg := logx.OrDiscard(c.Logger)
	lg = lg.With("cluster", c.ClusterID, "relay", relay.Host)
	a := &Agent{
		cfg: c, relay: relay, log: lg,
		closing: make(chan struct{}),
		cycle:   make(chan chan struct{}),
		conns:   map[*tunnelConn]struct{}{},
	}

	if a.metrics, err = newMetrics(c.Registerer, "agent", false, a.Stats); err != nil {
		return nil, fmt.Errorf("tunnel: registering metrics: %w", err)
	}
	a.h1 = &http.Server{
		Handler:           a.instrumentUpgrades(c.Handler),
		ReadHeaderTimeout: 30 * time.Second,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	return a, nil
}

// ID is the agent's name at the relay (AgentConfig.AgentID, or the one
// made up for it).
func (a *Agent) ID() string { return a.cfg.AgentID }

// Stats returns the agent's counters. Body bytes are counted as the relay
// counts them: request and answer bodies and raw streams alike.
func (a *Agent) Stats() Stats { return a.stats.snapshot() }

// instrumentUpgrades counts the upgrades (exec, attach, port-forward) the
// handler answers on raw streams; their bytes are the stream's to count.
func (a *Agent) instrumentUpgrades(h http.Handler) http.Handler {
	if a.metrics == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &httpx.Recorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		a.metrics.observe(classUpgrade, rec.Status, "", start)
	})
}

// Run keeps Connections tunnel connections open until ctx ends, then drains
// them: GOAWAY, and up to DrainTimeout for in-flight streams to finish. It
// returns when every connection is closed. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	for i := range a.cfg.Connections {
		a.slots.Add(1)
		go a.slot(i)
	}
	select {
	case <-ctx.Done():
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.DrainTimeout)
		defer cancel()
		a.Shutdown(dctx)
	case <-a.closing:
		a.slots.Wait()
	}
	return nil
}

// Shutdown stops reconnecting, sends GOAWAY on every connection so the relay
// sends no new streams, and waits for in-flight streams to finish. When ctx
// ends first, the remaining connections are closed and ctx's error
// returned.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.closeOnce.Do(func() { close(a.closing) })
	a.mu.Lock()
	conns := make([]*tunnelConn, 0, len(a.conns))
	for tc := range a.conns {
		conns = append(conns, tc)
	}
	a.mu.Unlock()
	var err error
	for _, tc := range conns {
		tc.goAway(closedShutdown)
	}
	for _, tc := range conns {
		if e := tc.wait(ctx); e != nil {
			err = e
		}
	}
	a.slots.Wait()
	return err
}

// Reconnect replaces every connection without dropping a stream: each
// connection's replacement is opened first, then the old one gets GOAWAY
// and finishes its streams. Use it after rotating credentials or to move to
// another relay replica. It returns when every slot has a new connection
// and the old ones are closed, or when ctx ends.
func (a *Agent) Reconnect(ctx context.Context) error {
	var pending []chan struct{}
	for range a.cfg.Connections {
		done := make(chan struct{})
		select {
		case a.cycle <- done:
			pending = append(pending, done)
		case <-ctx.Done():
			return ctx.Err()
		case <-a.closing:
			return errors.New("tunnel: agent is shutting down")
		}
	}
	for _, done := range pending {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// slot keeps one tunnel connection open.
func (a *Agent) slot(i int) {
	defer a.slots.Done()
	b := backoff{base: a.cfg.MinBackoff, max: a.cfg.MaxBackoff}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-a.closing; cancel() }()
	log := a.log.With("slot", i)
	for {
		up := a.upSignal()
		tc, err := a.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := b.afterFailure(err)
			log.Warn("cannot open tunnel connection", "err", err, "retry_in", wait.Round(time.Millisecond))
			var he *handshakeError
			if errors.As(err, &he) && he.RetryAfter > 0 {
				up = nil // the relay asked for this wait
			}
			switch sleepUnless(ctx, wait, up) {
			case stopped:
				return
			case woken:
				b.reset()
			}
			continue
		}
		a.up()
		log.Info("tunnel connection open", "replica", tc.replica.id)
		spread := backoff{base: a.cfg.MinBackoff, max: a.cfg.MaxBackoff}
		dark := false
		var window time.Duration // the relay's reconnect window, once its connection closed
		var respread, retryMove <-chan time.Time
		var movingFrom *tunnelConn // whose relay asked it to move, once taken up
		for tc != nil {
			if respread == nil && a.crowded(tc) {
				respread = time.After(spread.next())
			}
			var moveAsked <-chan struct{}
			if tc != movingFrom {
				moveAsked = tc.move
			}
			select {
			case <-moveAsked:
				movingFrom = tc
				retryMove = a.move(ctx, &tc, &spread, log)
			case <-retryMove:
				retryMove = a.move(ctx, &tc, &spread, log)
			case <-respread:
				respread = nil
				tc = a.spread(ctx, tc, log)
			case <-tc.fleet: // the fleet's size changed: crowded is asked again
			case <-tc.done:
				dark = tc.dark.Load()
				if dark {
					log.Warn("tunnel connection closed: its pings went unanswered; dialing again", "after", time.Since(tc.since).Round(time.Millisecond))
				} else {
					log.Info("tunnel connection closed", "after", time.Since(tc.since).Round(time.Millisecond))
				}
				if time.Since(tc.since) >= a.cfg.StableAfter {
					b.reset()
				}
				window = time.Duration(tc.window.Load())
				tc = nil
			case <-a.closing:
				<-tc.done // Shutdown drains it
				return
			case done := <-a.cycle:
				tc, _ = a.replace(ctx, tc, done, log)
			}
		}
		// Wait a jittered moment even after a good connection, so agents
		// that lost the same relay do not all come back at once; once
		// another slot is back, come back with it. A connection dropped
		// as dark is dialed again at once: the relay's retries of the
		// requests that were on it wait for the new one.
		if dark {
			dark = false
			continue
		}
		switch sleepUnless(ctx, b.afterLoss(window), a.upSignal()) {
		case stopped:
			return
		case woken:
			b.reset()
		}
	}
}

// move replaces *tc, whose relay asked for it (it is draining): a new
// connection first, which the draining relay refuses so that it lands on
// another, then GOAWAY on the old one. If no new connection can be opened
// the old one serves on, and move says when to try again.
func (a *Agent) move(ctx context.Context, tc **tunnelConn, b *backoff, log *slog.Logger) <-chan time.Time {
	old := *tc
	ntc, err := a.replace(ctx, old, make(chan struct{}), log)
	if err != nil {
		return time.After(b.afterFailure(err))
	}
	log.Info("tunnel connection moved: its relay is draining", "from", old.replica.id, "to", ntc.replica.id)
	*tc = ntc
	return nil
}

// fleetSize notes the fleet's size the relay of tc says it has now, and
// has tc's slot look again at whether to spread.
func (a *Agent) fleetSize(tc *tunnelConn, v string) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return
	}
	a.mu.Lock()
	tc.replica.count = n
	a.mu.Unlock()
	select {
	case tc.fleet <- struct{}{}:
	default:
	}
}

// crowded reports whether tc shares its replica with another of the
// agent's connections while the fleet has replicas none of them uses.
func (a *Agent) crowded(tc *tunnelConn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if tc.replica.id == "" || tc.replica.count < 2 || a.cfg.Connections < 2 {
		return false // alone, or the relay does not say there are others
	}
	used := map[string]bool{}
	shared := false
	for c := range a.conns {
		used[c.replica.id] = true
		if c != tc && c.replica.id == tc.replica.id {
			shared = true
		}
	}
	return shared && len(used) < min(a.cfg.Connections, tc.replica.count)
}

// spread opens another connection for tc's slot. If it reached a replica
// none of the agent's other connections uses, it replaces tc (which
// finishes its streams); otherwise it goes and tc stays.
func (a *Agent) spread(ctx context.Context, tc *tunnelConn, log *slog.Logger) *tunnelConn {
	ntc, err := a.connect(ctx)
	if err != nil {
		log.Warn("cannot open a connection to spread over replicas", "err", err)
		return tc
	}
	a.mu.Lock()
	fresh := true
	for c := range a.conns {
		if c != tc && c != ntc && c.replica.id == ntc.replica.id {
			fresh = false
		}
	}
	a.mu.Unlock()
	if !fresh || ntc.replica.id == tc.replica.id {
		ntc.goAway(closedMoved)
		return tc
	}
	log.Info("tunnel connection moved to another replica", "from", tc.replica.id, "to", ntc.replica.id)
	tc.goAway(closedMoved)
	return ntc
}

// replace opens a new connection, then drains old. If the new one cannot be
// opened, old keeps serving and is returned with the error.
func (a *Agent) replace(ctx context.Context, old *tunnelConn, done chan struct{}, log *slog.Logger) (*tunnelConn, error) {
	defer close(done)
	tc, err := a.connect(ctx)
	if err != nil {
		log.Warn("cannot open replacement connection; keeping the old one", "err", err)
		return old, err
	}
	old.goAway(closedMoved)
	old.wait(context.Background())
	return tc, nil
}

// How sleepUnless ended.
const (
	slept = iota
	woken
	stopped
)

// sleepUnless sleeps for d, or until wake is closed (woken) or ctx ends
// (stopped); a nil wake never wakes it.
func sleepUnless(ctx context.Context, d time.Duration, wake <-chan struct{}) int {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return slept
	case <-wake:
		return woken
	case <-ctx.Done():
		return stopped
	}
}

// up tells the slots waiting to reconnect that one of them is connected:
// the relay takes connections again, so they need wait no longer.
func (a *Agent) up() {
	a.upMu.Lock()
	defer a.upMu.Unlock()
	if a.upCh != nil {
		close(a.upCh)
	}
	a.upCh = make(chan struct{})
}

// upSignal is closed when a slot next connects.
func (a *Agent) upSignal() <-chan struct{} {
	a.upMu.Lock()
	defer a.upMu.Unlock()
	if a.upCh == nil {
		a.upCh = make(chan struct{})
	}
	return a.upCh
}

// tunnelConn is one open tunnel connection, served as HTTP/2.
type tunnelConn struct {
	conn    net.Conn
	tracked *connCloser    // conn: why it closed
	srv     *h2server.Conn // the HTTP/2 server on conn
	since   time.Time
	done    chan struct{} // closed when serving ends
	// replica is the fleet replica the connection reached, if the relay
	// said.
	replica replicaInfo
	// move is closed when the relay asks for the connection to be
	// replaced (it is draining).
	move     chan struct{}
	moveOnce sync.Once
	// fleet has a token when the relay said the fleet's size changed.
	fleet chan struct{}
	// busy counts the requests the connection carries now; dark is set
	// when it was dropped for silence (watchBusy, or a ping unanswered).
	busy atomic.Int32
	dark atomic.Bool
	// window is the relay's reconnect window (a time.Duration), from its
	// handshake and from what it says as it grows.
	window atomic.Int64
}

// watchBusy drops tc when it carries a request and nothing has arrived on
// it for BusyDeadAfter: the relay pings a busy connection more often
// than that, so the path is dark (packets dropped, no reset), and a new
// connection is what lets the relay's retry through. An idle connection
// is left to HTTP/2's pings.
func (a *Agent) watchBusy(tc *tunnelConn) {
	t := time.NewTicker(a.cfg.BusyDeadAfter / 10)
	defer t.Stop()
	for {
		select {
		case <-tc.done:
			return
		case <-t.C:
			silent := time.Since(time.Unix(0, tc.tracked.lastRead.Load()))
			if tc.busy.Load() > 0 && silent >= a.cfg.BusyDeadAfter {
				a.log.Warn("tunnel connection silent while busy; dropping it", "silent", silent.Round(time.Millisecond))
				tc.dark.Store(true)
				tc.tracked.closeFor(closedLost)
				return
			}
		}
	}
}

// goAway drains the connection: GOAWAY, then closed once its streams are
// done; reason says why, for the metrics.
func (tc *tunnelConn) goAway(reason string) {
	tc.tracked.setReason(reason)
	tc.srv.Shutdown()
}

func (tc *tunnelConn) wait(ctx context.Context) error {
	select {
	case <-tc.done:
		return nil
	case <-ctx.Done():
		tc.tracked.closeFor(closedShutdown)
		<-tc.done
		return ctx.Err()
	}
}

// connect dials the relay and starts serving the connection.
func (a *Agent) connect(ctx context.Context) (*tunnelConn, error) {
	conn, replica, err := a.dial(ctx)
	if err != nil {
		return nil, err
	}
	tracked := &connCloser{Conn: conn, lostAfter: a.cfg.PingTimeout}
	tracked.lastRead.Store(time.Now().UnixNano())
	tc := &tunnelConn{conn: tracked, tracked: tracked, since: time.Now(), done: make(chan struct{}), replica: replica, move: make(chan struct{}), fleet: make(chan struct{}, 1)}
	tc.window.Store(int64(replica.reconnectWindow))
	tracked.onClose = func(reason string) {
		if reason == closedLost {
			// A ping went unanswered: the path is dark, not the relay
			// gone, and the relay's retries wait for a new connection.
			tc.dark.Store(true)
		}
		a.stats.connClosed(reason)
	}
	tc.srv = a.h2Server(tracked, conn.b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			switch r.Header.Get(headerStreamKind) {
			case streamMove:
				tc.moveOnce.Do(func() { close(tc.move) })
				w.WriteHeader(http.StatusOK)
				return
			case streamFleet:
				a.fleetSize(tc, r.Header.Get(HeaderReplicas))
				w.WriteHeader(http.StatusOK)
				return
			case streamWindow:
				if w := reconnectWindowOf(r.Header); w > 0 {
					tc.window.Store(int64(w))
				}
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		tc.busy.Add(1)
		defer tc.busy.Add(-1)
		a.serveTunnel(w, r)
	}))
	a.mu.Lock()
	select {
	case <-a.closing:
		a.mu.Unlock()
		conn.Close()
		return nil, errors.New("tunnel: agent is shutting down")
	default:
	}
	a.conns[tc] = struct{}{}
	a.mu.Unlock()
	a.stats.connsOpened.Add(1)
	go a.watchBusy(tc)
	go func() {
		defer close(tc.done)
		tc.srv.Serve()
		tracked.Close()
		a.mu.Lock()
		delete(a.conns, tc)
		a.mu.Unlock()
	}()
	return tc, nil
}

// serveTunnel serves one stream of a tunnel connection.
func (a *Agent) serveTunnel(w http.ResponseWriter, r *http.Request) {
	a.stats.streamsOpened.Add(1)
	defer a.stats.streamsClosed.Add(1)
	if r.Method == http.MethodConnect && r.Header.Get(headerStreamKind) != "" {
		a.serveStream(w, r)
		return
	}
	start := time.Now()
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countedBody{rc: r.Body, n: &a.stats.bytesTo}
	}
	ba := &bufferedAnswer{ResponseWriter: w, lent: &a.answerBufs}
	defer ba.free()
	rec := &httpx.Recorder{ResponseWriter: ba, Count: &a.stats.bytesFrom}
	a.cfg.Handler.ServeHTTP(rec, r)
	ba.send()
	a.metrics.observe(requestClass(r, false), rec.Status, "", start)
}

// serveStream accepts a raw stream and serves it as an HTTP/1.1 connection
// with the handler, until the connection is closed (or hijacked and then
// closed) or the relay resets the stream.
func (a *Agent) serveStream(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(w).Flush(); err != nil {
		return
	}
	s := newAgentStream(w, r, &a.stats)
	stop := context.AfterFunc(r.Context(), func() { s.Close() })
	defer stop()
	a.h1.Serve(&oneConnListener{conn: s})
	// The HTTP/1 server may still be finishing a write on the stream; the
	// ResponseWriter must not be used once this handler returns.
	s.mu.Lock()
	s.writeClosed = true
	s.mu.Unlock()
}
