package impersonate

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/clusterconnect/clusterconnect/tokens"
)

// recorder notes the status and size of a response. It unwraps for
// http.ResponseController, so flushing and hijacking still work.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	reason string // why the handler refused the request, if it did
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush is here as well as through Unwrap: ReverseProxy asserts
// http.Flusher on older paths.
func (r *recorder) Flush() { http.NewResponseController(r.ResponseWriter).Flush() }

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

// audit writes one line per request. Tokens never appear in it.
func (h *Handler) audit(r *http.Request, id *tokens.Identity, rec *recorder, start time.Time) {
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", rec.status),
		slog.Duration("duration", time.Since(start)),
		slog.Int64("bytes", rec.bytes),
	}
	if r.URL.RawQuery != "" {
		attrs = append(attrs, slog.String("query", r.URL.RawQuery))
	}
	if id != nil {
		attrs = append(attrs, slog.String("user", id.Username), slog.Any("groups", id.Groups))
	}
	if rec.reason != "" {
		attrs = append(attrs, slog.String("reason", rec.reason))
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}
