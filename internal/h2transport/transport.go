package h2transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/h2client"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// Config is what a Transport dials and how its connections behave.
type Config struct {
	// Addr is the server's host:port.
	Addr string
	// TLS is the client's TLS configuration; its NextProtos are replaced
	// with h2 and http/1.1, and an empty ServerName is Addr's host.
	TLS *tls.Config
	// Dial opens the TCP connection; nil: a net.Dialer with TCP
	// keep-alives. DialTimeout bounds it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Settings are the connections'; zero fields take the defaults below.
	Settings Settings
}

// Settings are h2client's: windows, bounds, pings, and the names its
// error messages give.
type Settings = h2client.Settings

// Defaults of Config.Settings. A stream's window grows from 64 KiB to
// 4 MiB while its reader keeps up, out of 8 MiB for the Transport's
// streams together (the relay's figures for its agents' answers); the
// pings are client-go's (a connection silent for 30 s is pinged, and
// closed if no answer comes in 15 s).
const (
	DefaultInitialWindow = 64 << 10
	DefaultWindowLimit   = 4 << 20
	DefaultWindowBudget  = 8 << 20
	DefaultMaxHeaderList = 1 << 20
	DefaultPingInterval  = 30 * time.Second
	DefaultPingTimeout   = 15 * time.Second
	DefaultWriteTimeout  = 30 * time.Second
)

// Errors for what a Transport does not carry. With either, the request's
// body is left unread and open, so that the caller may send the request
// another way.
var (
	ErrUpgrade  = errors.New("h2transport: an upgrade cannot cross HTTP/2")
	ErrNotHTTP2 = errors.New("h2transport: the server did not choose HTTP/2")
)

// Transport is an http.RoundTripper to one server over HTTP/2. It opens
// a connection when none it holds can take another stream (the server's
// SETTINGS_MAX_CONCURRENT_STREAMS), and drops the ones that failed or
// that the server is draining with GOAWAY. A request without a body that
// the server did not process (GOAWAY before its stream, no stream to
// spare, REFUSED_STREAM) is sent again, up to twice, on whichever
// connection can take it then.
type Transport struct {
	addr string
	tls  *tls.Config
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	h2   *h2client.Config

	notHTTP2 atomic.Bool

	mu    sync.Mutex
	conns []*h2client.Conn

	// dialing is held by the one dial under way: the requests that find
	// no stream wait for it (or for their context to end) and look again.
	dialing chan struct{}
}

// New returns a Transport for cfg.
func New(cfg Config) *Transport {
	tc := cfg.TLS.Clone()
	if tc == nil {
		tc = &tls.Config{}
	}
	tc.NextProtos = []string{"h2", "http/1.1"}
	if tc.ServerName == "" {
		if host, _, err := net.SplitHostPort(cfg.Addr); err == nil {
			tc.ServerName = host
		}
	}
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	s := cfg.Settings
	s.InitialWindow = orDefault(s.InitialWindow, DefaultInitialWindow)
	s.WindowLimit = orDefault(s.WindowLimit, DefaultWindowLimit)
	s.WindowBudget = orDefault(s.WindowBudget, DefaultWindowBudget)
	if s.WindowShare == 0 {
		s.WindowShare = int32(min(int64(s.WindowLimit), s.WindowBudget/8))
	}
	s.MaxHeaderList = orDefault(s.MaxHeaderList, DefaultMaxHeaderList)
	s.PingInterval = orDefault(s.PingInterval, DefaultPingInterval)
	s.PingTimeout = orDefault(s.PingTimeout, DefaultPingTimeout)
	s.WriteTimeout = orDefault(s.WriteTimeout, DefaultWriteTimeout)
	if s.Peer == "" {
		s.Peer = "the server at " + cfg.Addr
	}
	if s.ErrorPrefix == "" {
		s.ErrorPrefix = "h2transport: "
	}
	return &Transport{addr: cfg.Addr, tls: tc, dial: dial, h2: h2client.NewConfig(s), dialing: make(chan struct{}, 1)}
}

func orDefault[T int32 | int64 | uint32 | time.Duration](v, d T) T {
	if v == 0 {
		return d
	}
	return v
}

// NotHTTP2 reports whether the server did not choose HTTP/2 when last
// dialed: every RoundTrip then fails with ErrNotHTTP2 at once.
func (t *Transport) NotHTTP2() bool { return t.notHTTP2.Load() }

// RoundTrip sends req to the server on a stream of one of its
// connections and returns the answer, whose body reads the stream.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if httpx.IsUpgrade(req.Header) {
		return nil, ErrUpgrade
	}
	if t.notHTTP2.Load() {
		return nil, ErrNotHTTP2
	}
	again := req.Body == nil || req.Body == http.NoBody
	for try := 0; ; try++ {
		cc, err := t.conn(req.Context())
		if err != nil {
			if !errors.Is(err, ErrNotHTTP2) && req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		resp, err := cc.RoundTrip(req)
		if err != nil && again && try < 2 && req.Context().Err() == nil &&
			(errors.Is(err, h2client.ErrGoingAway) || errors.Is(err, h2client.ErrNoSlot) || errors.Is(err, h2client.ErrRefused)) {
			continue
		}
		return resp, err
	}
}

// conn returns a connection with a stream reserved for the caller,
// dialing one if none can take it.
func (t *Transport) conn(ctx context.Context) (*h2client.Conn, error) {
	if cc := t.reserve(); cc != nil {
		return cc, nil
	}
	select {
	case t.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-t.dialing }()
	if cc := t.reserve(); cc != nil {
		return cc, nil // another dial made room meanwhile
	}
	cc, err := t.dialConn(ctx)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.conns = append(t.conns, cc)
	t.mu.Unlock()
	if !cc.ReserveNewRequest() {
		return nil, fmt.Errorf("h2transport: a new connection to %s took no stream", t.addr)
	}
	return cc, nil
}

// reserve reserves a stream on a connection that can take one, dropping
// the connections that take none any more.
func (t *Transport) reserve() *h2client.Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropLocked((*h2client.Conn).Done)
	for _, cc := range t.conns {
		if cc.ReserveNewRequest() {
			return cc
		}
	}
	return nil
}

// dropLocked forgets the connections for which drop reports true.
func (t *Transport) dropLocked(drop func(*h2client.Conn) bool) {
	live := t.conns[:0]
	for _, cc := range t.conns {
		if !drop(cc) {
			live = append(live, cc)
		}
	}
	clear(t.conns[len(live):])
	t.conns = live
}

// DialTimeout bounds a connection's dial, TLS handshake and the server's
// first SETTINGS together.
const DialTimeout = 30 * time.Second

// dialConn dials the server and starts HTTP/2 on the connection.
func (t *Transport) dialConn(ctx context.Context) (*h2client.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, DialTimeout)
	defer cancel()
	raw, err := t.dial(ctx, "tcp", t.addr)
	if err != nil {
		return nil, fmt.Errorf("h2transport: dialing %s: %w", t.addr, err)
	}
	tc := tls.Client(raw, t.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("h2transport: TLS handshake with %s: %w", t.addr, err)
	}
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		tc.Close()
		t.notHTTP2.Store(true)
		return nil, ErrNotHTTP2
	}
	cc, err := h2client.New(t.h2, tc)
	if err != nil {
		return nil, err
	}
	// Streams reserved before the server's SETTINGS would count against
	// HTTP/2's assumed 100, and a server with a lower limit resets the
	// ones past it once it has our acknowledgement (net/http's server:
	// PROTOCOL_ERROR, which nothing may send again).
	if err := cc.AwaitSettings(ctx); err != nil {
		cc.Close()
		return nil, fmt.Errorf("h2transport: waiting for the SETTINGS of %s: %w", t.addr, err)
	}
	return cc, nil
}

// Conns reports how many connections the Transport holds.
func (t *Transport) Conns() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// CloseIdleConnections closes the connections that carry no stream.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropLocked((*h2client.Conn).CloseIfIdle)
}
