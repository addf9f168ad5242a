package impersonate

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/logx"
	"github.com/clusterconnect/clusterconnect/internal/tracex"
	"github.com/clusterconnect/clusterconnect/sessions"
	"github.com/clusterconnect/clusterconnect/tokens"
)

// TokenVerifier verifies bearer tokens; *tokens.Verifier is one.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (*tokens.Token, error)
}

// Config configures a Handler.
type Config struct {
	// RESTConfig reaches the API server with the handler's own identity,
	// which needs the impersonate verb on users, groups, uids and
	// userextras. Nil means rest.InClusterConfig (the pod's service
	// account, whose rotated token client-go re-reads).
	RESTConfig *rest.Config
	// Verifier checks callers' tokens. Required.
	Verifier TokenVerifier
	// Mapping turns a verified token into the impersonated identity;
	// tokens.EntraMapping() for Entra ID. The zero Mapping uses sub.
	Mapping tokens.Mapping
	// PassThroughForeignTokens sends a request whose token is not for this
	// handler (another issuer or audience, such as a Kubernetes
	// service-account token) to the API server untouched, with the
	// caller's token and without the handler's credentials, so the API
	// server authenticates it itself. Off: such requests get 401.
	PassThroughForeignTokens bool
	// AllowNestedImpersonation honours a caller's own Impersonate-*
	// headers (kubectl --as, --as-group) when the API server says, by a
	// SubjectAccessReview, that the caller's identity may impersonate
	// them; otherwise 403. Off: a request with Impersonate-* headers is
	// refused with 403, so nobody believes they acted as someone else
	// while the request ran as themselves.
	AllowNestedImpersonation bool
	// RecheckNestedEvery is how often a long-lived request (a watch, logs
	// -f, exec, attach, port-forward) is decided again where the decision
	// can change while it runs: made with nested impersonation, the API
	// server is asked again whether its caller may still impersonate whom
	// it asked for (one SubjectAccessReview per impersonated attribute);
	// made with a token whose groups Mapping.GroupResolver looked up
	// (groups overage), they are looked up again (through the resolver's
	// cache). When the caller may no longer impersonate, or lost a group
	// the request was made with, the request is ended (a watch through the
	// relay then ends with the words a new request gets). Default
	// DefaultRecheckNestedEvery.
	RecheckNestedEvery time.Duration
	// MaxGroups bounds the groups of one identity; default
	// DefaultMaxGroups. An identity with more is refused with 403, never
	// forwarded with part of its groups.
	MaxGroups int
	// MaxIdentityBytes bounds the impersonation headers of one request,
	// counted as HTTP/2 counts a header list (name, value and 32 bytes a
	// field); default DefaultMaxIdentityBytes. Over it: 403.
	MaxIdentityBytes int
	// TracerProvider, if set, traces each request (OpenTelemetry): a span
	// for the handler's hop, under the trace context the request came
	// with (the relay's), one for the token check and one for the
	// request to the API server, which gets that span's context as W3C
	// traceparent. Nil: no spans; a request's traceparent passes through
	// to the API server untouched.
	TracerProvider trace.TracerProvider
	// Logger receives one audit line per request (its ID, user, groups,
	// method, path, status, duration, bytes; never a token) and errors;
	// nil discards. The ID is the request's Audit-ID header, which the
	// relay sets, or one the handler makes; kube-apiserver records the
	// request under the same ID.
	Logger *slog.Logger
}

// Default bounds on one identity. Entra ID puts at most 200 groups in a
// token (more become a groups overage), so real tokens fit with room for
// app roles.
const (
	// DefaultRecheckNestedEvery is Config.RecheckNestedEvery's default.
	DefaultRecheckNestedEvery = 10 * time.Second
	DefaultMaxGroups          = 256
	DefaultMaxIdentityBytes   = 64 << 10
)

// Handler authenticates each request's bearer token and forwards it to the
// API server as the token's identity, through Kubernetes impersonation.
type Handler struct {
	verifier     TokenVerifier
	mapping      tokens.Mapping
	passThrough  bool
	nested       bool
	maxGroups    int
	maxIDBytes   int
	log          *slog.Logger
	episodes     *logx.Episodes // what a caller without a good token can make happen
	tracer       trace.Tracer   // nil: no spans
	recheckEvery time.Duration
	target       *url.URL

	proxy       *httputil.ReverseProxy // with the handler's credentials
	passProxy   *httputil.ReverseProxy // without them, for foreign tokens
	sar         authorizationv1client.SubjectAccessReviewInterface
	healthCheck func(ctx context.Context) error
}

// New returns a Handler for cfg.
func New(cfg *Config) (*Handler, error) {
	if cfg == nil || cfg.Verifier == nil {
		return nil, errors.New("impersonate: Config.Verifier is required")
	}
	rc := cfg.RESTConfig
	if rc == nil {
		var err error
		if rc, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("impersonate: no RESTConfig given and not in a cluster: %w", err)
		}
	}
	if rc.Impersonate.UserName != "" || len(rc.Impersonate.Groups) > 0 || rc.Impersonate.UID != "" || len(rc.Impersonate.Extra) > 0 {
		return nil, errors.New("impersonate: RESTConfig must not impersonate anyone itself")
	}
	target, err := url.Parse(rc.Host)
	if err != nil || target.Host == "" {
		if target, err = url.Parse("https://" + rc.Host); err != nil {
			return nil, fmt.Errorf("impersonate: bad API server address %q: %w", rc.Host, err)
		}
	}
	lg := logx.OrDiscard(cfg.Logger)
	h := &Handler{
		verifier:     cfg.Verifier,
		mapping:      cfg.Mapping,
		passThrough:  cfg.PassThroughForeignTokens,
		nested:       cfg.AllowNestedImpersonation,
		maxGroups:    cmp.Or(cfg.MaxGroups, DefaultMaxGroups),
		maxIDBytes:   cmp.Or(cfg.MaxIdentityBytes, DefaultMaxIdentityBytes),
		log:          lg,
		episodes:     logx.NewEpisodes(lg, 0),
		target:       target,
		tracer:       tracex.Tracer(cfg.TracerProvider),
		recheckEvery: cmp.Or(cfg.RecheckNestedEvery, DefaultRecheckNestedEvery),
	}
	own, err := newTransport(rc, target)
	if err != nil {
		return nil, err
	}
	anon, err := newTransport(rest.AnonymousClientConfig(rc), target)
	if err != nil {
		return nil, err
	}
	errLog := log.New(slogWriter{lg}, "", 0)
	// An exec or attach the handler ends (recheck) says why on its error
	// stream.
	h.proxy = &httputil.ReverseProxy{Rewrite: h.rewrite, Transport: sessions.Upgrades(own), ErrorHandler: h.proxyError, ErrorLog: errLog, BufferPool: httpx.Buffers}
	h.passProxy = &httputil.ReverseProxy{Rewrite: h.rewritePassThrough, Transport: anon, ErrorHandler: h.proxyError, ErrorLog: errLog, BufferPool: httpx.Buffers}
	authz, err := authorizationv1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("impersonate: SubjectAccessReview client: %w", err)
	}
	h.sar = authz.SubjectAccessReviews()
	h.healthCheck = func(ctx context.Context) error { return apiServerReady(ctx, own, target) }
	return h, nil
}

type identityKey struct{}

// request is what ServeHTTP learned about a request, for the rewrite step.
type request struct {
	id    *tokens.Identity
	token string // set only for pass-through
}

// ServeHTTP authenticates and forwards one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// The request's ID, as kube-apiserver will record it: the relay's,
	// or a new one for a request that came without.
	if httpx.RequestID(r.Header) == "" {
		r.Header[httpx.HeaderAuditID] = []string{httpx.NewRequestID()}
	}
	rec := &recorder{Recorder: httpx.Recorder{ResponseWriter: w}}
	var who *tokens.Identity
	defer func() { h.audit(r, who, rec, start) }()
	var check trace.Span
	var hopCtx context.Context
	if h.tracer != nil {
		var hop trace.Span
		r, hop = h.startTrace(r)
		defer func() { endTrace(hop, rec.Status, who) }()
		hopCtx = r.Context()
		var ctx context.Context
		ctx, check = h.tracer.Start(hopCtx, "token check")
		defer check.End() // ended sooner on the way to the API server
		r = r.WithContext(ctx)
	}

	raw, err := bearerToken(r)
	if err != nil {
		refuse(rec, r, http.StatusUnauthorized, "Unauthorized: "+err.Error())
		return
	}
	tok, err := h.verifier.Verify(r.Context(), raw)
	if err != nil {
		if h.passThrough && tokens.IsForeign(err) {
			// Not ours: let the API server judge it (a service-account
			// token, say). It gets the caller's own credential only.
			r = h.towardsAPIServer(r, hopCtx, check)
			ctx := context.WithValue(r.Context(), identityKey{}, &request{token: raw})
			h.passProxy.ServeHTTP(rec, r.WithContext(ctx))
			return
		}
		code := http.StatusUnauthorized
		if errors.Is(err, tokens.ErrKeySet) {
			code = http.StatusServiceUnavailable
			h.episodes.Error("cannot verify tokens", "err", err)
		}
		refuse(rec, r, code, "Unauthorized: "+err.Error())
		return
	}
	id, err := h.mapping.Identity(r.Context(), tok)
	if err != nil {
		refuse(rec, r, http.StatusUnauthorized, "Unauthorized: "+err.Error())
		return
	}
	who = id
	asks := hasImpersonation(r.Header)
	if asks && !h.nested {
		refuse(rec, r, http.StatusForbidden, "impersonate: nested impersonation (kubectl --as, --as-group, --as-uid) is not enabled for this cluster; "+
			"run the command without it to act as "+id.Username)
		return
	}
	caller := id
	if asks {
		nestedID, err := h.authorizeNested(r.Context(), id, r.Header)
		if err != nil {
			var denied *deniedError
			if errors.As(err, &denied) {
				refuse(rec, r, http.StatusForbidden, denied.Error())
			} else {
				h.log.Error("nested impersonation check failed", "err", err)
				refuse(rec, r, http.StatusInternalServerError, "impersonate: cannot check the requested impersonation")
			}
			return
		}
		id = nestedID
	}
	if httpx.SessionClass(r) != "" && (asks || h.resolvesGroups(tok)) {
		// A watch, exec or port-forward lasts only as long as the
		// handler would still decide for it as it did.
		r = h.recheck(r, tok, caller, asks)
	}
	if id.Username == "" {
		// Fail closed: never forward without an identity to impersonate.
		refuse(rec, r, http.StatusUnauthorized, "Unauthorized: no identity")
		return
	}
	if err := h.checkSize(id); err != nil {
		// All of it or nothing: a partial group list could grant what a
		// deny-by-group elsewhere was meant to stop.
		refuse(rec, r, http.StatusForbidden, err.Error())
		return
	}
	r = h.towardsAPIServer(r, hopCtx, check)
	ctx := context.WithValue(r.Context(), identityKey{}, &request{id: id})
	h.proxy.ServeHTTP(rec, r.WithContext(ctx))
}

// rewrite builds the request to the API server. ReverseProxy has removed
// hop-by-hop headers, including any the client named in Connection, before
// this runs, so nothing the client sends can remove what is set here.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(h.target)
	pr.Out.Host = h.target.Host
	stripCredentials(pr.Out.Header)
	pr.Out.Trailer = nil
	h.injectTrace(pr)
	rq, _ := pr.In.Context().Value(identityKey{}).(*request)
	if rq == nil || rq.id == nil || rq.id.Username == "" {
		// Unreachable through ServeHTTP; a request without identity must
		// still not go out with the handler's credentials.
		pr.Out.URL = &url.URL{Scheme: "fail-closed", Host: "invalid"}
		return
	}
	setIdentity(pr.Out.Header, rq.id)
}

// rewritePassThrough builds the request for a token the API server judges
// itself. The caller's Impersonate-* headers go along: the API server
// checks them against the caller's own identity, as it would without the
// handler in between.
func (h *Handler) rewritePassThrough(pr *httputil.ProxyRequest) {
	pr.SetURL(h.target)
	pr.Out.Host = h.target.Host
	asked := impersonationHeaders(pr.Out.Header)
	stripCredentials(pr.Out.Header)
	pr.Out.Trailer = nil
	h.injectTrace(pr)
	rq, _ := pr.In.Context().Value(identityKey{}).(*request)
	if rq == nil || rq.token == "" {
		pr.Out.URL = &url.URL{Scheme: "fail-closed", Host: "invalid"}
		return
	}
	pr.Out.Header.Set("Authorization", "Bearer "+rq.token)
	for k, v := range asked {
		pr.Out.Header[k] = v
	}
}

func (h *Handler) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	h.log.Warn("API server request failed", "path", r.URL.Path, "err", err)
	httpx.WriteStatus(w, r, http.StatusBadGateway, "", "impersonate: the API server could not be reached: "+err.Error())
}

// bearerToken finds the caller's token: the Authorization header, or for
// WebSocket clients that cannot set headers (browsers), the
// base64url.bearer.authorization.k8s.io.<token> subprotocol.
func bearerToken(r *http.Request) (string, error) {
	if tok, err := httpx.BearerToken(r.Header); err != httpx.ErrNoBearer {
		return tok, err
	}
	for _, v := range r.Header.Values("Sec-Websocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if enc, ok := strings.CutPrefix(p, wsBearerPrefix); ok {
				b, err := base64.RawURLEncoding.DecodeString(enc)
				if err != nil || len(b) == 0 {
					return "", errors.New("malformed bearer subprotocol")
				}
				return string(b), nil
			}
		}
	}
	return "", errors.New("no bearer token")
}

const wsBearerPrefix = "base64url.bearer.authorization.k8s.io."

// stripCredentials removes everything a client could use to choose its
// identity or to mislead the API server: its credential, every
// Impersonate-* header in any spelling, the front-proxy identity headers
// (X-Remote-User, -Group, -Extra-*: harmless while the handler
// authenticates with a token, exploitable the day it uses a front-proxy
// client certificate), forwarding headers, and bearer subprotocols.
// Request trailers are dropped wholesale by the callers: the API server
// reads none.
func stripCredentials(h http.Header) {
	for k := range h {
		lk := strings.ToLower(k)
		if lk == "authorization" || strings.HasPrefix(lk, "impersonate-") || strings.HasPrefix(lk, "x-remote-") ||
			lk == "forwarded" || strings.HasPrefix(lk, "x-forwarded-") || lk == "x-real-ip" {
			delete(h, k)
		}
	}
	if protos := h.Values("Sec-Websocket-Protocol"); len(protos) > 0 {
		var keep []string
		for _, v := range protos {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" && !strings.HasPrefix(p, wsBearerPrefix) {
					keep = append(keep, p)
				}
			}
		}
		h.Del("Sec-Websocket-Protocol")
		if len(keep) > 0 {
			h.Set("Sec-Websocket-Protocol", strings.Join(keep, ", "))
		}
	}
}

// setIdentity writes the impersonation headers for id.
func setIdentity(h http.Header, id *tokens.Identity) {
	h.Set(authenticationv1.ImpersonateUserHeader, id.Username)
	if id.UID != "" {
		h.Set(authenticationv1.ImpersonateUIDHeader, id.UID)
	}
	for _, g := range id.Groups {
		h.Add(authenticationv1.ImpersonateGroupHeader, g)
	}
	for k, vs := range id.Extra {
		key := authenticationv1.ImpersonateUserExtraHeaderPrefix + escapeExtraKey(k)
		for _, v := range vs {
			h.Add(key, v)
		}
	}
}

// escapeExtraKey percent-encodes the bytes of an extra's key that cannot
// appear in a header name, as the API server expects (it unescapes them).
func escapeExtraKey(k string) string {
	if escapedLen(k) == len(k) {
		return k
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, escapedLen(k))
	for i := 0; i < len(k); i++ {
		if c := k[i]; keepInExtraKey(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&0xf])
		}
	}
	return string(b)
}

// escapedLen is the length of escapeExtraKey(k), without building it.
func escapedLen(k string) int {
	n := len(k)
	for i := 0; i < len(k); i++ {
		if !keepInExtraKey(k[i]) {
			n += 2
		}
	}
	return n
}

func keepInExtraKey(c byte) bool { return httpguts.IsTokenRune(rune(c)) && c != '%' }

// checkSize refuses an identity over the configured bounds.
func (h *Handler) checkSize(id *tokens.Identity) error {
	if len(id.Groups) > h.maxGroups {
		return fmt.Errorf("impersonate: the identity has %d groups, more than the %d this cluster accepts: "+
			"ask for a token with fewer groups (Entra ID: groups assigned to the application, or app roles)", len(id.Groups), h.maxGroups)
	}
	const field = 32 // HTTP/2's per-field overhead (RFC 9113 §6.5.2)
	n := len(authenticationv1.ImpersonateUserHeader) + len(id.Username) + field
	if id.UID != "" {
		n += len(authenticationv1.ImpersonateUIDHeader) + len(id.UID) + field
	}
	for _, g := range id.Groups {
		n += len(authenticationv1.ImpersonateGroupHeader) + len(g) + field
	}
	for k, vs := range id.Extra {
		for _, v := range vs {
			n += len(authenticationv1.ImpersonateUserExtraHeaderPrefix) + escapedLen(k) + len(v) + field
		}
	}
	if n > h.maxIDBytes {
		return fmt.Errorf("impersonate: the identity takes %d bytes of impersonation headers, more than the %d this cluster accepts", n, h.maxIDBytes)
	}
	return nil
}

// impersonationHeaders returns a copy of the Impersonate-* headers in h.
func impersonationHeaders(h http.Header) http.Header {
	var out http.Header
	for k, v := range h {
		if _, ok := cutPrefixFold(k, "Impersonate-"); ok {
			if out == nil {
				out = http.Header{}
			}
			out[k] = append([]string(nil), v...)
		}
	}
	return out
}

func hasImpersonation(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "impersonate-") {
			return true
		}
	}
	return false
}

// slogWriter sends ReverseProxy's own log lines to the logger.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}

// refuse answers the request with a Status and keeps the message for the
// audit line, so the cluster's side says why it refused (tokens' errors
// never contain the token).
func refuse(rec *recorder, r *http.Request, code int, msg string) {
	rec.reason = msg
	httpx.WriteStatus(rec, r, code, "", msg)
}
