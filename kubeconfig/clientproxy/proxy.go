package clientproxy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/logx"
	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/tracex"
	"github.com/clusterconnect/clusterconnect/kubeconfig"
	"github.com/clusterconnect/clusterconnect/sessions"
	"github.com/clusterconnect/clusterconnect/sessions/reattach"
)

// Config configures a Proxy.
type Config struct {
	// RelayURL is the relay, https://host[:port]. Required.
	RelayURL string
	// ClusterID is where requests go that do not name a cluster. Requests
	// to /clusters/{id}/… go to that cluster, so one proxy can serve
	// several kubeconfig contexts.
	ClusterID string
	// TokenSource supplies the user's token; wrap slow sources in
	// source.Cached. Required unless PassClientToken. One that is a
	// StepUpper meets the relay's claims challenges (step-up).
	TokenSource oauth2.TokenSource
	// PassClientToken forwards the client's own Authorization header
	// instead of adding one (the service-account token mode of
	// az connectedk8s proxy --token).
	PassClientToken bool
	// RelayTLS verifies the relay; nil means the system roots.
	RelayTLS *tls.Config
	// RelayPingInterval is how long a connection to the relay may read
	// nothing before the proxy pings it, and RelayPingTimeout how long
	// the answer may take before the connection is taken for dead and
	// closed: a path to the relay gone dark (no reset, packets dropped)
	// is found in seconds, the requests on it fail (a watch resumes, an
	// exec re-attaches) and the next ones go on a new connection. Zero:
	// DefaultRelayPingInterval, DefaultRelayPingTimeout; a connection
	// without requests is closed after 30 s, so pings cost little.
	RelayPingInterval, RelayPingTimeout time.Duration
	// ListenAddr for ListenAndServe; default 127.0.0.1:47011.
	ListenAddr string
	// InsecureListenOnAnyAddress allows a ListenAddr that is not loopback.
	// Anyone who can reach such a port acts with the user's token: it
	// MUST NOT be set on a machine others can reach.
	InsecureListenOnAnyAddress bool
	// CertDir keeps the proxy's CA (ca.crt, ca.key, mode 0600), so that
	// kubeconfigs written once stay valid; default
	// <user config dir>/clusterconnect/proxy.
	CertDir string
	// Sessions holds the settings of the sessions exec, attach and
	// port-forward ride on (package sessions/reattach): they go on when
	// the relay replica or the path to it goes, for up to Grace. Zero
	// fields: the defaults.
	Sessions reattach.Config
	// TracerProvider, if set, traces each request (OpenTelemetry): a span
	// for the proxy's hop, whose context goes to the relay as W3C
	// traceparent (the relay continues the trace only if it trusts its
	// clients' IDs; otherwise it links its own to it). Nil: none.
	TracerProvider trace.TracerProvider
	// Logger receives request errors, a line per session and, at debug
	// level, per request; nil discards.
	Logger *slog.Logger
}

// Proxy is the local client proxy: kubectl talks TLS to it on loopback, and
// it forwards each request to the relay with the user's token.
type Proxy struct {
	cfg   Config
	relay *url.URL
	ca    *pki.CA
	cert  tls.Certificate
	log   *slog.Logger

	refusalMu     sync.Mutex
	lastRefusal   string // the last refusal logged, and when
	lastRefusalAt time.Time
	proxy         *httputil.ReverseProxy
	caPath        string
	renew         *renewer
	renewClient   *http.Client
	tracer        trace.Tracer // nil: no spans
}

// New checks cfg, loads or creates the proxy's CA and issues its serving
// certificate.
func New(cfg *Config) (*Proxy, error) {
	if cfg == nil {
		return nil, errors.New("clientproxy: nil Config")
	}
	c := *cfg
	relay, err := url.Parse(c.RelayURL)
	if err != nil || relay.Scheme != "https" || relay.Host == "" {
		return nil, fmt.Errorf("clientproxy: relay URL %q must be https://host[:port]", c.RelayURL)
	}
	if c.TokenSource == nil && !c.PassClientToken {
		return nil, errors.New("clientproxy: a TokenSource is required (or PassClientToken)")
	}
	if c.ListenAddr == "" {
		c.ListenAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(kubeconfig.DefaultProxyPort))
	}
	if c.CertDir == "" {
		dir, err := os.UserConfigDir()
		if err != nil {
			return nil, fmt.Errorf("clientproxy: no config dir for the proxy's CA (set CertDir): %w", err)
		}
		c.CertDir = filepath.Join(dir, "clusterconnect", "proxy")
	}
	lg := logx.OrDiscard(c.Logger)
	p := &Proxy{cfg: c, relay: relay, log: lg, tracer: tracex.Tracer(c.TracerProvider)}
	p.caPath = filepath.Join(c.CertDir, "ca.crt")
	if p.ca, err = pki.LoadOrCreateCA(c.CertDir, "clusterconnect client proxy CA", 365*24*time.Hour); err != nil {
		return nil, fmt.Errorf("clientproxy: %w", err)
	}
	leaf, err := p.ca.Issue(pki.LeafOptions{CommonName: "clusterconnect client proxy", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return nil, err
	}
	if p.cert, err = leaf.TLSCertificate(); err != nil {
		return nil, fmt.Errorf("clientproxy: %w", err)
	}
	h2, h1 := relayTransports(c.RelayTLS, cmp.Or(c.RelayPingInterval, DefaultRelayPingInterval), cmp.Or(c.RelayPingTimeout, DefaultRelayPingTimeout))
	p.renew, p.renewClient = newRenewer(), &http.Client{Transport: h2, Timeout: 10 * time.Second}
	sessionsCfg := c.Sessions
	p.proxy = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		ModifyResponse: p.modifyResponse,
		// A watch whose connection to the relay breaks ends saying why, or
		// goes on; an exec, attach or port-forward goes on.
		// A claims challenge is met and the request sent again, once.
		Transport: &stepUpTransport{p: p, next: &httpx.SplitTransport{
			HTTP2: sessions.Watches(&currentToken{next: h2, p: p}),
			// An exec or attach whose session is lost for good ends
			// with words kubectl prints, and a non-zero exit.
			HTTP1: sessions.Upgrades(&sessionTransport{tls: h1.TLSClientConfig, cfg: &sessionsCfg, plain: h1, auth: p.carrierAuth}),
		}},
		ErrorHandler: p.relayError,
		ErrorLog:     log.New(io.Discard, "", 0),
		BufferPool:   httpx.Buffers,
	}
	return p, nil
}

// currentToken sends each request to the relay with the user's token as
// it is when the request goes: a watch resumed an hour after kubectl
// asked for it goes with a token the relay still accepts.
type currentToken struct {
	next http.RoundTripper
	p    *Proxy
}

func (t *currentToken) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.p.cfg.PassClientToken {
		return t.next.RoundTrip(req)
	}
	auth, err := t.p.authorization(nil)
	if err != nil {
		return nil, fmt.Errorf("clusterconnect proxy: cannot get your token: %w", err)
	}
	if req.Header.Get("Authorization") != auth {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", auth)
	}
	return t.next.RoundTrip(req)
}

// HealthHandler serves the proxy's own health on a listener of its own
// (the proxy's port forwards every path, /healthz included, to the
// cluster): /livez and /healthz answer 200 while the process runs;
// /readyz answers 200 when the user's token can be had, else 503 with the
// reason.
func (p *Proxy) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") }
	mux.HandleFunc("/livez", ok)
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if p.cfg.TokenSource != nil {
			if _, err := p.cfg.TokenSource.Token(); err != nil {
				http.Error(w, "cannot get your token: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		ok(w, r)
	})
	return mux
}

// CAPEM is the proxy's CA certificate, for the kubeconfig's
// certificate-authority-data.
func (p *Proxy) CAPEM() []byte { return p.ca.CertPEM() }

// CAFile is where the proxy's CA certificate is kept.
func (p *Proxy) CAFile() string { return p.caPath }

// ListenAndServe serves on ListenAddr until ctx ends, then shuts down
// gracefully.
func (p *Proxy) ListenAndServe(ctx context.Context) error {
	if err := checkLoopback(p.cfg.ListenAddr, p.cfg.InsecureListenOnAnyAddress); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", p.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("clientproxy: %w", err)
	}
	return p.Serve(ctx, ln)
}

// Serve serves TLS on ln until ctx ends.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           p,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{p.cert}, NextProtos: []string{"h2", "http/1.1"}},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	renewing, stop := context.WithCancel(ctx)
	defer stop()
	go p.renewLoop(renewing)
	return httpx.ServeUntil(ctx, srv, ln, 10*time.Second)
}

func checkLoopback(addr string, anyAddress bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("clientproxy: listen address %q: %w", addr, err)
	}
	if anyAddress {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("clientproxy: refusing to listen on %s: it is not a loopback address, and anyone reaching it would act with your token", addr)
}

type requestKey struct{}

// outbound is what ServeHTTP decided for a request, for rewrite.
type outbound struct {
	auth    string // the Authorization header the relay gets
	id      string // the request's ID (Audit-ID) as the proxy gave it
	session bool   // long-lived: it carries the proxy's session key
}

// ServeHTTP forwards one request to the relay.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	o := &outbound{id: httpx.RequestID(r.Header)}
	if o.id == "" {
		o.id = httpx.NewRequestID()
	}
	rec := &httpx.Recorder{ResponseWriter: w}
	defer p.logRequest(r, o, rec, start)
	if httpx.SessionClass(r) != "" {
		o.session = true
		defer p.renew.opened(p.sessionCluster(r))()
	}
	if p.tracer != nil {
		ctx, span := p.tracer.Start(tracex.Extract(r.Context(), r.Header), "proxy "+r.Method, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
				attribute.String("clusterconnect.request_id", o.id)))
		defer func() {
			span.SetAttributes(attribute.Int("http.response.status_code", rec.Status))
			span.End()
		}()
		r = r.WithContext(ctx)
	}
	var err error
	var tokenSpan trace.Span
	if p.tracer != nil {
		_, tokenSpan = p.tracer.Start(r.Context(), "token")
	}
	o.auth, err = p.authorization(r.Header)
	if tokenSpan != nil {
		tokenSpan.End()
	}
	if err != nil {
		p.log.Warn("cannot get your token", "id", o.id, "err", err)
		writeTokenFailure(rec, r, "clusterconnect proxy: cannot get your token: "+err.Error())
		return
	}
	p.proxy.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), requestKey{}, o)))
}

// logRequest writes the request's line: at Info for a session (a watch,
// logs -f, exec, attach, port-forward), at Debug for the rest. Its ID is
// the one the relay answered, which the relay's, the agent's and
// kube-apiserver's records carry too.
func (p *Proxy) logRequest(r *http.Request, o *outbound, rec *httpx.Recorder, start time.Time) {
	class := httpx.SessionClass(r)
	level := slog.LevelDebug
	msg := "request"
	if class != "" {
		level, msg = slog.LevelInfo, "session ended"
	}
	if !p.log.Enabled(r.Context(), level) {
		return
	}
	id := o.id
	if answered := httpx.RequestID(rec.Header()); answered != "" {
		id = answered
	}
	attrs := []slog.Attr{slog.String("id", id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", rec.Status), slog.Duration("duration", time.Since(start)), slog.Int64("bytes", rec.Written)}
	if class != "" {
		attrs = append(attrs, slog.String("class", class))
	}
	p.log.LogAttrs(r.Context(), level, msg, attrs...)
}

// authorization is the Authorization header the relay gets: the user's
// token now, or with PassClientToken the client's own header h.
func (p *Proxy) authorization(h http.Header) (string, error) {
	if p.cfg.PassClientToken {
		return h.Get("Authorization"), nil
	}
	tok, err := p.cfg.TokenSource.Token()
	if err != nil {
		return "", err
	}
	return "Bearer " + tok.AccessToken, nil
}

// carrierAuth gives a session's carriers their Authorization: the token
// as it is when each is dialed, or the client's own header.
func (p *Proxy) carrierAuth(out *http.Request) func() (string, error) {
	h := out.Header.Clone()
	return func() (string, error) { return p.authorization(h) }
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	path := pr.In.URL.EscapedPath()
	target := *p.relay
	if !strings.HasPrefix(path, "/clusters/") {
		target.Path = "/clusters/" + p.cfg.ClusterID
	}
	pr.SetURL(&target)
	pr.Out.Header.Del("Authorization")
	if o, _ := pr.In.Context().Value(requestKey{}).(*outbound); o != nil {
		pr.Out.Header[httpx.HeaderAuditID] = []string{o.id}
		if p.tracer != nil {
			tracex.Inject(pr.In.Context(), pr.Out.Header)
		}
		if o.session {
			pr.Out.Header.Set(access.HeaderSessionKey, p.renew.key)
		}
		if o.auth != "" {
			pr.Out.Header.Set("Authorization", o.auth)
		}
	}
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	p.noteSession(resp)
	return p.noteRefusal(resp)
}

// noteSession writes a session's first line, as its answer begins.
func (p *Proxy) noteSession(resp *http.Response) {
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusSwitchingProtocols {
		return
	}
	r := resp.Request
	class := httpx.SessionClass(r)
	if class == "" || !p.log.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	id := httpx.RequestID(resp.Header)
	if id == "" {
		id = httpx.RequestID(r.Header)
	}
	p.log.LogAttrs(r.Context(), slog.LevelInfo, "session started", slog.String("id", id), slog.String("class", class), slog.String("path", r.URL.Path))
}

// noteRefusal logs why the relay (or the cluster) refused the user's
// token: kubectl shows only "You must be logged in" for a 401 on its
// discovery paths, so the proxy's log is where the user reads the reason.
// The same reason is logged at most once a minute.
func (p *Proxy) noteRefusal(resp *http.Response) error {
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		return nil
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	if err != nil {
		return nil
	}
	msg := statusMessage(head)
	p.logRefusal(resp.StatusCode, msg, resp.Request.URL.Path)
	if resp.StatusCode == http.StatusUnauthorized && !p.cfg.PassClientToken && httpx.ReadRaw(resp.Request) {
		// Words kubectl shows, as writeTokenFailure gives them.
		resp.Body.Close()
		rec := httptest.NewRecorder()
		writeTokenFailure(rec, resp.Request, "clusterconnect proxy: the relay refused your token: "+msg)
		*resp = *rec.Result()
	}
	return nil
}

// statusMessage is the message of a Status body, or the body as text.
func statusMessage(body []byte) string {
	var st struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		return st.Message
	}
	return strings.TrimSpace(string(body))
}

func (p *Proxy) logRefusal(code int, msg, path string) {
	p.refusalMu.Lock()
	defer p.refusalMu.Unlock()
	if msg == p.lastRefusal && time.Since(p.lastRefusalAt) < time.Minute {
		return
	}
	p.lastRefusal, p.lastRefusalAt = msg, time.Now()
	if code == http.StatusUnauthorized {
		p.log.Warn("your token was refused", "status", code, "reason", msg, "path", path)
		return
	}
	// A 403 is most often RBAC saying no to a well-signed token.
	p.log.Info("request forbidden", "status", code, "reason", msg, "path", path)
}

// writeTokenFailure answers a request the user's token could not be got
// or was refused for: a 401 with a Status, except on kubectl's discovery
// paths, where client-go replaces a 401's words with fixed ones ("the
// server has asked for the client to provide credentials") and the user
// would never read why. There it is a 403 with the words as text, which
// kubectl prints; in proxy mode kubectl holds no credential a 401 could
// make it renew, so it loses nothing.
func writeTokenFailure(w http.ResponseWriter, r *http.Request, msg string) {
	code := http.StatusUnauthorized
	if httpx.ReadRaw(r) {
		code = http.StatusForbidden
	}
	httpx.WriteStatus(w, r, code, "", msg)
}

func (p *Proxy) relayError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	p.log.Warn("relay request failed", "path", r.URL.Path, "err", err)
	httpx.WriteStatus(w, r, http.StatusBadGateway, "", fmt.Sprintf("clusterconnect proxy: cannot reach the relay at %s: %v", p.relay.Host, err))
}

// The client proxy's pings to the relay, as the agent's: a connection
// that read nothing for 2 s is pinged, and one whose ping is not answered
// within 3 s is closed.
const (
	DefaultRelayPingInterval = 2 * time.Second
	DefaultRelayPingTimeout  = 3 * time.Second
)

// relayIdleConnTimeout closes a connection to the relay that carries no
// request, so that pinging it costs the relay little.
const relayIdleConnTimeout = 30 * time.Second

// relayTransports returns an HTTP/2-capable transport, which pings its
// connections after ping of silence and drops those that do not answer
// within timeout, and an HTTP/1.1-only twin for upgrades, which cannot
// cross HTTP/2 (their sessions have pings of their own).
func relayTransports(tc *tls.Config, ping, timeout time.Duration) (h2, h1 *http.Transport) {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.Proxy = http.ProxyFromEnvironment
	if tc != nil {
		base.TLSClientConfig = tc.Clone()
	}
	h2 = base.Clone()
	h2.ForceAttemptHTTP2 = true
	h2.IdleConnTimeout = relayIdleConnTimeout
	h2.HTTP2 = &http.HTTP2Config{SendPingTimeout: ping, PingTimeout: timeout}
	h1 = base.Clone()
	h1.ForceAttemptHTTP2 = false
	h1.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	if h1.TLSClientConfig == nil {
		h1.TLSClientConfig = &tls.Config{}
	}
	h1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	return h2, h1
}
