package tunnel_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// A client's trace context: its trace ID and span ID.
const (
	clientTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpan   = "00f067aa0ba902b7"
	clientParent = "00-" + clientTrace + "-" + clientSpan + "-01"
)

// The relay's spans continue a client's trace only where it trusts its
// clients' IDs; otherwise they begin a trace of their own, linked to the
// client's, and the client's traceparent does not reach the agent.
// Without a TracerProvider the client's traceparent passes through.
func TestTheRelaysSpansAndTheClientsTrace(t *testing.T) {
	for _, c := range []struct {
		name          string
		tracing       bool
		trust         bool
		agentSeesUs   bool // the agent gets the client's trace ID
		relayIsParent bool // …and a span ID of the relay's
	}{
		{name: "no tracing", agentSeesUs: true},
		{name: "tracing, untrusted client", tracing: true},
		{name: "tracing, trusted client", tracing: true, trust: true, agentSeesUs: true, relayIsParent: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			var seen string
			h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = r.Header.Get("Traceparent")
				w.Write([]byte("ok"))
			}), harnessOpts{relayCfg: func(rc *tunnel.RelayConfig) {
				rc.TrustClientIDs = c.trust
				if c.tracing {
					rc.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
				}
			}})
			req, _ := http.NewRequest(http.MethodGet, h.url("/api"), nil)
			req.Header.Set("Traceparent", clientParent)
			req.Header.Set("Tracestate", "vendor=client")
			resp, err := h.client().Do(req)
			require.NoError(t, err)
			resp.Body.Close()

			parts := strings.Split(seen, "-")
			require.Len(t, parts, 4, "the agent gets a traceparent: %q", seen)
			assert.Equal(t, c.agentSeesUs, parts[1] == clientTrace, "the agent's trace ID %s", parts[1])
			if !c.tracing {
				assert.Equal(t, clientParent, seen, "untouched")
				assert.Empty(t, rec.Ended())
				return
			}
			spans := map[string]sdktrace.ReadOnlySpan{}
			for _, s := range rec.Ended() {
				spans[s.Name()] = s
			}
			hop, tun := spans["relay GET"], spans["tunnel to the agent"]
			require.NotNil(t, hop)
			require.NotNil(t, tun)
			assert.Equal(t, hop.SpanContext().SpanID(), tun.Parent().SpanID())
			assert.Equal(t, tun.SpanContext().SpanID().String(), parts[2], "the agent's parent is the relay's tunnel span")
			if c.relayIsParent {
				assert.Equal(t, clientSpan, hop.Parent().SpanID().String(), "the relay's hop is the client's span's child")
				return
			}
			assert.False(t, hop.Parent().IsValid(), "the relay's hop begins a trace of its own")
			require.Len(t, hop.Links(), 1)
			assert.Equal(t, clientSpan, hop.Links()[0].SpanContext.SpanID().String(), "linked to the client's")
		})
	}
}
