package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// agentFailures counts, by reason, the tunnel connections this process's
// agents could not open (their "cannot open tunnel connection" warnings).
var agentFailures = &failureLog{counts: map[string]int{}}

type failureLog struct {
	mu     sync.Mutex
	counts map[string]int
	last   time.Time // of the latest failure
}

func (l *failureLog) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn
}

func (l *failureLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "cannot open tunnel connection" {
		return nil
	}
	reason := "?"
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			reason = digits.ReplaceAllString(a.Value.String(), "N")
			return false
		}
		return true
	})
	l.mu.Lock()
	l.counts[reason]++
	l.last = time.Now()
	l.mu.Unlock()
	return nil
}

func (l *failureLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *failureLog) WithGroup(string) slog.Handler      { return l }

// snapshot returns the counts so far, and when the latest failed.
func (l *failureLog) snapshot() (map[string]int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.counts), l.last
}

// digits are what varies between two failures for one reason (ports,
// addresses, durations).
var digits = regexp.MustCompile(`[0-9]+`)

// fleet is many agents in this process.
type fleet struct {
	agents []*tunnel.Agent
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startFleet starts n agents (clusters agent-00000…) against the relay at
// addr, dialRate of them per second.
func startFleet(n int, addr, caDir string, handler http.Handler, dialRate int, tweak func(*tunnel.AgentConfig)) (*fleet, error) {
	caPEM, err := os.ReadFile(filepath.Join(caDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel}
	tick := time.NewTicker(time.Second / time.Duration(max(dialRate, 1)))
	defer tick.Stop()
	for i := range n {
		cfg := &tunnel.AgentConfig{
			RelayURL: "https://" + addr, ClusterID: clusterName(i), Credential: tunnel.SecretCredential(secret),
			Handler: handler, TLSConfig: &tls.Config{RootCAs: roots}, Connections: 1,
			Proxy:       func(*http.Request) (*url.URL, error) { return nil, nil },
			DialContext: agentHandshakes.dial,
			Logger:      slog.New(agentFailures),
		}
		if tweak != nil {
			tweak(cfg)
		}
		a, err := tunnel.NewAgent(cfg)
		if err != nil {
			f.stop()
			return nil, err
		}
		f.agents = append(f.agents, a)
		f.wg.Add(1)
		go func() { defer f.wg.Done(); a.Run(ctx) }()
		<-tick.C
	}
	return f, nil
}

func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

// opened is each agent's count of connections opened so far.
func (f *fleet) opened() []uint64 {
	out := make([]uint64, len(f.agents))
	for i, a := range f.agents {
		out[i] = a.Stats().ConnectionsOpened
	}
	return out
}

// broadcaster sends each event to every open watch.
type broadcaster struct {
	mu       sync.Mutex
	watchers map[chan string]struct{}
}

func newBroadcaster() *broadcaster { return &broadcaster{watchers: map[chan string]struct{}{}} }

func (b *broadcaster) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.watchers)
}

func (b *broadcaster) send(ev string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.watchers {
		select {
		case c <- ev:
		default: // a watcher that is not keeping up misses it (counted as lost)
		}
	}
}

// openAPISize is the size of a real kube-apiserver's /openapi/v2, which
// any signed-in user may read.
const openAPISize = 2300 << 10

var openAPI = make([]byte, openAPISize)

// handler answers /ping with a small JSON body, /openapi/v2 with 2.3 MB
// and /watch with a stream of the broadcaster's events.
func handler(b *broadcaster) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/openapi/v2" {
			w.Header().Set("Content-Length", strconv.Itoa(openAPISize))
			w.Write(openAPI)
			return
		}
		if r.URL.Path != "/watch" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"kind":"Status","status":"Success"}`)
			return
		}
		c := make(chan string, 16)
		b.mu.Lock()
		b.watchers[c] = struct{}{}
		b.mu.Unlock()
		defer func() { b.mu.Lock(); delete(b.watchers, c); b.mu.Unlock() }()
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-c:
				fmt.Fprintln(w, ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	})
}

// agentHandshakes bounds the TLS handshakes this process's agents compute
// at once (-agent-handshakes). Thousands of agents in one process share
// its cores: left to start their handshakes all together after a relay
// restarts, each gets a sliver of them, finishes too late for the
// relay's handshake deadline and tries again, and the process's own
// timers fall seconds behind. Agents on machines of their own do not slow
// each other down; this keeps the ones here from doing so, and leaves
// the relay to be measured. nil: no bound.
var agentHandshakes handshakeGate

// agentDials counts the connections this process's agents tried to open.
var agentDials atomic.Int64

// handshakeGate is a place for each handshake in flight.
type handshakeGate chan struct{}

// dial takes a place, then connects; the place is given back once the
// handshake's costly part is over on this side, at its first write after
// the relay answered (the client's Finished), or when the connection
// closes.
func (g handshakeGate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	agentDials.Add(1)
	if g != nil {
		select {
		case g <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if g == nil {
		return c, err
	}
	if err != nil {
		<-g
		return nil, err
	}
	return &gatedConn{Conn: c, g: g}, nil
}

type gatedConn struct {
	net.Conn
	g        handshakeGate
	answered atomic.Bool // the relay has sent something
	released atomic.Bool
}

func (c *gatedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.answered.Store(true)
	}
	return n, err
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if c.answered.Load() {
		c.release()
	}
	return c.Conn.Write(p)
}

func (c *gatedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

func (c *gatedConn) release() {
	if c.released.CompareAndSwap(false, true) {
		<-c.g
	}
}
