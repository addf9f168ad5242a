package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"
	"unsafe"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// One client request as the relay tells it: its ID, carried to the agent
// and on to kube-apiserver as Audit-ID; who the front door said the
// caller is; one line in the log when it ends and, for a session (a
// watch, logs -f, exec, attach, port-forward), one when it starts, with
// why it ended.

// clientRequest is what the relay keeps of a client's request while it
// runs.
type clientRequest struct {
	ending
	rec     httpx.Recorder // what the relay answered
	id      string
	ids     [1]string // id as a header's values, and the bytes of a new one:
	idBytes [36]byte  // kept here, they cost no allocation of their own
	caller  string    // NoteCaller
	refused string    // the AccessError reason of a refusal
	start   time.Time
	class   string // the session class of a long-lived request once answered; "" until then
	end     string // why the session ended: one of the end… reasons
	in, out int64  // an upgrade's bytes, client to cluster and back
}

type clientRequestKey struct{}

// RequestID returns the ID the relay gave the client's request whose
// context ctx is (in a ClientAuthorizer, a Middleware, a Picker), or "".
// It is the request's Audit-ID at the agent and at kube-apiserver, and
// the Audit-Id header of the relay's answer.
func RequestID(ctx context.Context) string {
	if cr, ok := ctx.Value(clientRequestKey{}).(*clientRequest); ok {
		return cr.id
	}
	return ""
}

// NoteCaller tells the relay, from a ClientAuthorizer's AuthorizeClient,
// who the request's caller is, for the relay's lines about the request (an
// object ID, say; never a credential). Other contexts ignore it.
func NoteCaller(ctx context.Context, caller string) {
	if cr, ok := ctx.Value(clientRequestKey{}).(*clientRequest); ok {
		cr.caller = caller
	}
}

// newClientRequest gives req its ID: the one it carries when
// RelayConfig.TrustClientIDs says to keep it and it is well formed, a new
// one otherwise.
func (r *Relay) newClientRequest(req *http.Request) *clientRequest {
	cr := &clientRequest{start: time.Now()}
	if r.cfg.TrustClientIDs {
		cr.id = httpx.RequestID(req.Header)
	}
	if cr.id == "" {
		httpx.FillRequestID(&cr.idBytes)
		cr.id = unsafe.String(&cr.idBytes[0], len(cr.idBytes)) // never written again
	}
	cr.ids[0] = cr.id
	return cr
}

// Why a session ended, the end label of the session metrics: a bounded
// set.
const (
	endClient         = "client"          // the client closed it, or went away
	endUpstream       = "upstream"        // the cluster's side ended it: the command exited, the watch ended
	endLost           = "lost"            // the connection to the cluster broke
	endStalled        = "stalled"         // the client stopped reading (RelayConfig.WriteTimeout)
	endRelayStopped   = "relay-stopped"   // the relay stopped under it
	endRevoked        = "revoked"         // the caller's access was taken back
	endExpired        = "expired"         // the caller's token expired
	endClusterRemoved = "cluster-removed" // the cluster is no longer served
	endOther          = "ended"           // a ClientAuthorizer's reason of its own
)

// endedBy is the end label for a request ended through EndRequest with
// err: an AccessError's reason if it is one of the known ones.
func endedBy(err error) string {
	var ae *AccessError
	if errors.As(err, &ae) {
		switch ae.Reason {
		case endRevoked, endExpired, endClusterRemoved:
			return ae.Reason
		}
	}
	return endOther
}

// began notes that a long-lived request's answer began: it is a session
// from now on.
func (r *Relay) began(cr *clientRequest, req *http.Request, cluster, class string) {
	cr.class = class
	r.metrics.sessionBegan(class)
	if r.log.Enabled(req.Context(), slog.LevelInfo) {
		r.log.LogAttrs(req.Context(), slog.LevelInfo, "session started",
			slog.String("id", cr.id), slog.String("cluster", cluster), slog.String("caller", cr.caller),
			slog.String("class", class), slog.String("path", req.URL.Path))
	}
}

// finish writes the request's line, and counts its end if it was a
// session.
func (r *Relay) finish(cr *clientRequest, req *http.Request, cluster string) {
	rec := &cr.rec
	if r.metrics != nil {
		r.observe(rec, req, cluster, cr.start)
		if cr.class != "" {
			r.metrics.sessionEnded(cr.class, cr.end)
		}
	}
	ctx := req.Context()
	level := slog.LevelInfo
	if rec.Status == http.StatusUnauthorized {
		// Anyone can send requests without a token: they are counted
		// (requests_total), not each written down.
		level = slog.LevelDebug
	}
	if !r.log.Enabled(ctx, level) {
		return
	}
	msg := "request"
	attrs := make([]slog.Attr, 0, 13)
	attrs = append(attrs, slog.String("id", cr.id), slog.String("cluster", cluster), slog.String("caller", cr.caller),
		slog.String("method", req.Method), slog.String("path", req.URL.Path), slog.Int("status", rec.Status),
		slog.Duration("duration", time.Since(cr.start)))
	if cr.class != "" {
		msg = "session ended"
		attrs = append(attrs, slog.String("class", cr.class), slog.String("end", cr.end))
	}
	if cr.class == "" || rec.Status != http.StatusSwitchingProtocols {
		attrs = append(attrs, slog.Int64("bytes", rec.Written))
	} else {
		attrs = append(attrs, slog.Int64("bytes_in", cr.in), slog.Int64("bytes_out", cr.out))
	}
	if cr.refused != "" {
		attrs = append(attrs, slog.String("refused", cr.refused))
	}
	r.log.LogAttrs(ctx, level, msg, attrs...)
}
