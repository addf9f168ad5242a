package impersonate

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/tokens"
)

// recorder notes what the handler answered (status and size, through
// httpx.Recorder, which still flushes and hijacks) and why it refused, if
// it did.
type recorder struct {
	httpx.Recorder
	reason string
}

// audit writes one line per request. Tokens never appear in it.
func (h *Handler) audit(r *http.Request, id *tokens.Identity, rec *recorder, start time.Time) {
	attrs := []slog.Attr{
		slog.String("id", r.Header.Get(httpx.HeaderAuditID)),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", rec.Status),
		slog.Duration("duration", time.Since(start)),
		slog.Int64("bytes", rec.Written),
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
