package impersonate

import (
	"context"
	"net/http"
	"net/http/httputil"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/tracex"
	"github.com/clusterconnect/clusterconnect/tokens"
)

// startTrace starts the span of the handler's hop, under the trace
// context the request came with: the relay's, whose tunnel is the only
// way in.
func (h *Handler) startTrace(r *http.Request) (*http.Request, trace.Span) {
	ctx, span := h.tracer.Start(tracex.Extract(r.Context(), r.Header), "agent "+r.Method,
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
			attribute.String("clusterconnect.request_id", r.Header.Get(httpx.HeaderAuditID)),
		))
	return r.WithContext(ctx), span
}

func endTrace(span trace.Span, status int, who *tokens.Identity) {
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if who != nil {
		span.SetAttributes(attribute.String("clusterconnect.user", who.Username))
	}
	if status >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(status))
	}
	span.End()
}

// towardsAPIServer ends the token check's span, if there is one, and
// starts the span of the request to the API server, under the hop's (the
// span of hopCtx) but in r's context, which may have been given more
// since (a recheck's), ending when the request does.
func (h *Handler) towardsAPIServer(r *http.Request, hopCtx context.Context, check trace.Span) *http.Request {
	if check == nil {
		return r
	}
	check.End()
	parent := trace.ContextWithSpan(r.Context(), trace.SpanFromContext(hopCtx))
	ctx, span := h.tracer.Start(parent, "kube-apiserver", trace.WithSpanKind(trace.SpanKindClient))
	context.AfterFunc(ctx, func() { span.End() })
	return r.WithContext(ctx)
}

// injectTrace gives the request to the API server the context of the
// span towards it.
func (h *Handler) injectTrace(pr *httputil.ProxyRequest) {
	if h.tracer != nil {
		tracex.Inject(pr.In.Context(), pr.Out.Header)
	}
}
