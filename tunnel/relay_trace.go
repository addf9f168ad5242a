package tunnel

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/clusterconnect/clusterconnect/internal/tracex"
)

// Traces, opt-in (RelayConfig.TracerProvider): a span for the relay's hop,
// with one for the front door's check and one for the tunnel to the
// agent, whose context goes to the agent as W3C traceparent. Without a
// TracerProvider a client's traceparent passes through untouched, for the
// agent and kube-apiserver to use, and nothing is spent.

// relayTrace is what serveCluster traces of one request.
type relayTrace struct {
	tracer trace.Tracer
	hop    trace.Span
}

// startTrace starts the span of the relay's hop for req, under the
// client's trace if the relay trusts its clients' IDs, else as a new
// trace linked to the client's: a caller cannot make its spans look like
// the relay's.
func (r *Relay) startTrace(req *http.Request, cr *clientRequest, cluster string) (*relayTrace, *http.Request) {
	tr := &relayTrace{tracer: r.tracer}
	ctx := req.Context()
	incoming := tracex.Extract(ctx, req.Header)
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("http.request.method", req.Method),
		attribute.String("url.path", req.URL.Path),
		attribute.String("clusterconnect.request_id", cr.id),
		attribute.String("clusterconnect.cluster", cluster),
	)}
	if r.cfg.TrustClientIDs {
		ctx = incoming
	} else if sc := trace.SpanContextFromContext(incoming); sc.IsValid() {
		opts = append(opts, trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	ctx, tr.hop = r.tracer.Start(ctx, "relay "+req.Method, opts...)
	return tr, req.WithContext(ctx)
}

// end ends the hop's span with the answer's status.
func (tr *relayTrace) end(status int, caller string) {
	tr.hop.SetAttributes(attribute.Int("http.response.status_code", status))
	if caller != "" {
		tr.hop.SetAttributes(attribute.String("clusterconnect.caller", caller))
	}
	if status >= 500 {
		tr.hop.SetStatus(codes.Error, strconv.Itoa(status))
	}
	tr.hop.End()
}

// child starts a span under the hop's.
func (tr *relayTrace) child(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	return tr.tracer.Start(ctx, name, trace.WithSpanKind(kind))
}
