package tunnel

import (
	"context"
	"errors"
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
	upgrade   bool
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
	return t.r.roundTripCluster(rt.clusterID, req, rt.upgrade, rt.fromPeer)
}

// forward is how serveCluster sends a request: through Middleware, if
// there is one. An upgrade's 101 Body may come back wrapped: the
// connection the relay writes the client's bytes to is in upgraded.
func (r *Relay) forward(id string, out *http.Request, upgrade, fromPeer bool) (resp *http.Response, upgraded *upgradedBody, err error) {
	if r.mw == nil {
		resp, err = r.roundTripCluster(id, out, upgrade, fromPeer)
		if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
			upgraded, _ = resp.Body.(*upgradedBody)
		}
		return resp, upgraded, err
	}
	ctx := context.WithValue(out.Context(), routeKey{}, route{clusterID: id, fromPeer: fromPeer, upgrade: upgrade})
	var slot *upgradeSlot
	if upgrade {
		slot = &upgradeSlot{}
		ctx = context.WithValue(ctx, upgradeSlotKey{}, slot)
	}
	resp, err = r.mw.RoundTrip(out.WithContext(ctx))
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		return resp, nil, err
	}
	if slot == nil || slot.body == nil {
		resp.Body.Close()
		return nil, nil, errors.New("tunnel: the relay's Middleware answered an upgrade itself")
	}
	return resp, slot.body, nil
}

// upgradeSlot keeps, for an upgrade sent through Middleware, the body
// the relay made of the agent's 101, whatever Middleware wraps it in.
type upgradeSlot struct{ body *upgradedBody }

type upgradeSlotKey struct{}

// keepUpgrade notes b in the slot of the request's context, if any.
func keepUpgrade(ctx context.Context, b *upgradedBody) *upgradedBody {
	if slot, ok := ctx.Value(upgradeSlotKey{}).(*upgradeSlot); ok {
		slot.body = b
	}
	return b
}
