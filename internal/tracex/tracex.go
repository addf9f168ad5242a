// Package tracex holds what the project's packages share of OpenTelemetry
// tracing: the instrumentation scope and W3C trace context in HTTP
// headers.
package tracex

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of the project's spans.
const Scope = "github.com/clusterconnect/clusterconnect"

// Tracer is tp's tracer for the project's spans, or nil for a nil tp:
// callers test for nil and spend nothing.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(Scope)
}

var traceContext = propagation.TraceContext{}

// Extract returns ctx with the trace context h carries (traceparent,
// tracestate), if any.
func Extract(ctx context.Context, h http.Header) context.Context {
	return traceContext.Extract(ctx, propagation.HeaderCarrier(h))
}

// Inject sets h's trace context to ctx's span's, replacing any h had.
func Inject(ctx context.Context, h http.Header) {
	h.Del("Traceparent")
	h.Del("Tracestate")
	traceContext.Inject(ctx, propagation.HeaderCarrier(h))
}
