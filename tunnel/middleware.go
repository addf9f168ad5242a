package tunnel

import (
	"context"
	"net/http"
)

// The relay's Middleware hook: what sits between a client's ordinary
// request and the cluster it goes to, without tunnel knowing what a
// Kubernetes watch is.

// route is what the relay's own transport needs of a request that went
// through Middleware: where it goes.
type route struct {
	clusterID string
	fromPeer  bool
}

type routeKey struct{}

// ClusterID returns the cluster a request the relay sends through
// RelayConfig.Middleware is for.
func ClusterID(ctx context.Context) string {
	r, _ := ctx.Value(routeKey{}).(route)
	return r.clusterID
}

// relayTransport is the transport Middleware wraps: it sends a request to
// the cluster its context names, as the relay sends any.
type relayTransport struct{ r *Relay }

func (t relayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, _ := req.Context().Value(routeKey{}).(route)
	return t.r.roundTripCluster(rt.clusterID, req, false, rt.fromPeer)
}

// forward is how serveCluster sends a request: through Middleware, if
// there is one, for ordinary requests.
func (r *Relay) forward(id string, out *http.Request, upgrade, fromPeer bool) (*http.Response, error) {
	if r.mw == nil || upgrade {
		return r.roundTripCluster(id, out, upgrade, fromPeer)
	}
	return r.mw.RoundTrip(out.WithContext(context.WithValue(out.Context(), routeKey{}, route{clusterID: id, fromPeer: fromPeer})))
}
