package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TracingVar registers -otlp-endpoint, where a binary sends its spans.
func TracingVar(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "otlp-endpoint", "", "send OpenTelemetry spans (OTLP over HTTP) to this collector, e.g. http://127.0.0.1:4318; spans go to its /v1/traces unless the URL has a path (default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT if set, else no spans)")
}

// Tracing returns a TracerProvider that sends service's spans to
// endpoint over OTLP/HTTP (or where the standard OTEL_EXPORTER_OTLP_…
// variables say, when endpoint is empty), and a shutdown that sends what
// is left, for up to 5 s; with neither, nil and a shutdown that does
// nothing: tracing is opt-in.
func Tracing(ctx context.Context, endpoint, service string) (trace.TracerProvider, func(), error) {
	none := func() {}
	var opts []otlptracehttp.Option
	switch {
	case endpoint != "":
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, none, fmt.Errorf("-otlp-endpoint %q: give the collector's URL, http(s)://host:port", endpoint)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces" // as for $OTEL_EXPORTER_OTLP_ENDPOINT
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	case os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "":
		return nil, none, nil
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, none, errors.New("-otlp-endpoint: " + err.Error())
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tp.Shutdown(ctx)
	}, nil
}
