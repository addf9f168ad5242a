// Package httpx holds the small HTTP pieces the packages share. It imports
// nothing of Kubernetes, so that package tunnel can use it.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// IsUpgrade reports whether a request asks to switch protocols (kubectl
// exec, attach and port-forward over SPDY or WebSocket).
func IsUpgrade(h http.Header) bool {
	return httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") && h.Get("Upgrade") != ""
}

// SplitTransport sends upgrade requests over HTTP/1.1, since they cannot
// cross HTTP/2, and everything else over a transport that may use HTTP/2.
type SplitTransport struct {
	HTTP2, HTTP1 http.RoundTripper
}

// RoundTrip picks the transport for req.
func (t *SplitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if IsUpgrade(req.Header) {
		return t.HTTP1.RoundTrip(req)
	}
	return t.HTTP2.RoundTrip(req)
}

// Bearer errors.
var (
	ErrNoBearer       = errors.New("no bearer token: the Authorization header is missing")
	ErrManyAuthorized = errors.New("more than one Authorization header")
	ErrNotBearer      = errors.New("the Authorization header must be a bearer token")
)

// BearerToken reads the one bearer token of an Authorization header:
// ErrNoBearer when there is none, ErrManyAuthorized when the header comes
// more than once (which credential would count?), ErrNotBearer for
// another scheme or an empty token.
func BearerToken(h http.Header) (string, error) {
	auth := h.Values("Authorization")
	switch len(auth) {
	case 0:
		return "", ErrNoBearer
	case 1:
	default:
		return "", ErrManyAuthorized
	}
	scheme, tok, ok := strings.Cut(auth[0], " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", ErrNotBearer
	}
	return tok, nil
}

// RetryAfter sets w's Retry-After header to d in whole seconds, at least 1.
func RetryAfter(w http.ResponseWriter, d time.Duration) {
	secs := int((d + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
}

// WriteStatus answers r with a Kubernetes meta/v1 Status, which kubectl
// prints as a readable error, with its Content-Length. name, if not empty,
// goes in the details (a cluster ID); a 401 carries a WWW-Authenticate
// challenge, the caller's if it set one on w. A Retry-After the caller
// has set on w's header is copied into the details: client-go waits and
// retries a 429 or 5xx that has one, up to ten times, and reports one
// without it at once, so set it only where a retry soon can succeed (see
// RetryAfter). The shape is declared here rather than taken from
// apimachinery so that package tunnel, which imports nothing of
// Kubernetes, shares this one writer.
//
// client-go reads the discovery roots (/api, /apis) and /version with
// Result.Raw, which turns any error body that is not text into the word
// "unknown": there kubectl would print "Error from server (Forbidden):
// unknown" for the first command a user runs. On those paths, for the codes
// whose text client-go shows (403, 500, 502), the message goes as
// text/plain instead; for the others (401, 429, 503: fixed words whatever
// the body) it goes in a Warning header as well, which kubectl prints once
// ("Warning: …") before its own words, even with an empty discovery cache.
func WriteStatus(w http.ResponseWriter, r *http.Request, code int, name, message string) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	if code == http.StatusUnauthorized && h.Get("Www-Authenticate") == "" {
		h.Set("Www-Authenticate", `Bearer realm="clusterconnect"`)
	}
	if r != nil && readRaw(r.URL.Path) {
		if textShown(code) {
			writeBody(w, code, "text/plain; charset=utf-8", []byte(message+"\n"))
			return
		}
		h.Add("Warning", Warning(message))
	}
	s := status{Kind: "Status", APIVersion: "v1", Status: "Failure", Message: message, Reason: statusReasons[code], Code: code}
	if s.Reason == "" {
		s.Reason = "Unknown"
	}
	retry, _ := strconv.Atoi(h.Get("Retry-After"))
	if name != "" || retry > 0 {
		s.Details = &statusDetails{Name: name, RetryAfterSeconds: retry}
	}
	body, _ := json.Marshal(s)
	writeBody(w, code, "application/json", append(body, '\n'))
}

// writeBody sends a whole answer with its length, so that it is complete
// even when the connection is closed right after it.
func writeBody(w http.ResponseWriter, code int, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	w.Write(body)
}

// status is the wire shape of a meta/v1 Status failure.
type status struct {
	Kind       string         `json:"kind"`
	APIVersion string         `json:"apiVersion"`
	Metadata   struct{}       `json:"metadata"`
	Status     string         `json:"status"`
	Message    string         `json:"message"`
	Reason     string         `json:"reason"`
	Details    *statusDetails `json:"details,omitempty"`
	Code       int            `json:"code"`
}

type statusDetails struct {
	Name              string `json:"name,omitempty"`
	RetryAfterSeconds int    `json:"retryAfterSeconds,omitempty"`
}

// statusReasons are Kubernetes' StatusReason names for the codes answered.
var statusReasons = map[int]string{
	http.StatusBadRequest:       "BadRequest",
	http.StatusUnauthorized:     "Unauthorized",
	http.StatusForbidden:        "Forbidden",
	http.StatusNotFound:         "NotFound",
	http.StatusMethodNotAllowed: "MethodNotAllowed",
	http.StatusUpgradeRequired:  "BadRequest",
	// Kubernetes has no reason of its own for 431.
	http.StatusRequestHeaderFieldsTooLarge: "BadRequest",
	http.StatusTooManyRequests:             "TooManyRequests",
	http.StatusInternalServerError:         "InternalError",
	http.StatusBadGateway:                  "InternalError",
	http.StatusServiceUnavailable:          "ServiceUnavailable",
	http.StatusGatewayTimeout:              "Timeout",
}

// Warning is a Warning header's value carrying text as Kubernetes sends
// one (299, no agent), which client-go hands to kubectl's warning printer:
// quotes and backslashes escaped, control characters made spaces, at most
// maxWarning bytes of text.
func Warning(text string) string {
	if len(text) > maxWarning {
		text = strings.ToValidUTF8(text[:maxWarning], "") + "…"
	}
	var b strings.Builder
	b.WriteString(`299 - "`)
	for _, r := range text {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// maxWarning bounds a Warning's text: a message can quote what a caller
// sent (a token's audience), already truncated.
const maxWarning = 1024

// ReadRaw reports whether client-go reads r's answer raw (the discovery
// roots and /version), where it shows the text of a 403, 500 or 502 only.
func ReadRaw(r *http.Request) bool { return r != nil && readRaw(r.URL.Path) }

// readRaw reports whether client-go reads this path's errors as raw bytes:
// the discovery roots and /version, also under a cluster prefix
// (/clusters/{id}/api).
func readRaw(path string) bool {
	path = strings.TrimSuffix(path, "/")
	return strings.HasSuffix(path, "/api") || strings.HasSuffix(path, "/apis") || strings.HasSuffix(path, "/version")
}

// textShown reports whether client-go shows a text error body's words for
// this status code (apimachinery's NewGenericServerResponse).
func textShown(code int) bool {
	return code == http.StatusForbidden || code == http.StatusInternalServerError || code == http.StatusBadGateway
}

// ServeUntil serves srv on ln until ctx ends, over TLS when srv.TLSConfig
// holds certificates, then shuts it down: no new connections, and up to
// grace for the requests in flight. It returns nil after such a stop.
func ServeUntil(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		defer cancel()
		srv.Shutdown(sctx)
	})
	defer stop()
	var err error
	if srv.TLSConfig != nil && (len(srv.TLSConfig.Certificates) > 0 || srv.TLSConfig.GetCertificate != nil) {
		err = srv.ServeTLS(ln, "", "")
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// OK answers 200 "ok": a liveness endpoint.
var OK = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })

// ServeSide runs a side server (health, metrics) for h on addr until ctx
// ends, then shuts it down gracefully; what stops it otherwise is logged.
func ServeSide(ctx context.Context, addr string, h http.Handler, log *slog.Logger, what string) {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		log.Info("serving "+what, "addr", addr)
		err = ServeUntil(ctx, srv, ln, 5*time.Second)
	}
	if err != nil {
		log.Error(what+" stopped", "err", err)
	}
}

// Refuse answers req with a Status (WriteStatus). A request with a body
// that is not going to be read is refused at once and, over HTTP/1.x, its
// connection closed after the answer: net/http reads up to 256 KiB of an
// unread body, before answering and again after, so a refused caller
// trickling a body would hold the connection and its goroutine as long
// as it liked. The answer carries its length, so it is complete all the
// same.
func Refuse(w http.ResponseWriter, req *http.Request, code int, name, message string) {
	if req.ProtoMajor != 1 || !HasBody(req) {
		WriteStatus(w, req, code, name, message)
		return
	}
	w.Header().Set("Connection", "close")
	WriteStatus(w, req, code, name, message)
	rc := http.NewResponseController(w)
	if rc.Flush() == nil {
		if conn, _, err := rc.Hijack(); err == nil {
			conn.Close()
		}
	}
}

// HasBody reports whether the client sends, or may send, a body. For
// server requests only: on a client request a zero ContentLength with a
// Body means a length not known yet.
func HasBody(req *http.Request) bool {
	return req.ContentLength != 0 && req.Body != nil && req.Body != http.NoBody
}
