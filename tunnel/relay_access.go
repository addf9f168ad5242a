package tunnel

import (
	"errors"
	"net/http"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// A ClientAuthorizer decides, on the relay, whether a client's request may
// reach a cluster. It is called for every request under /clusters/{id}/
// before the cluster is looked up and before anything of the request enters
// a tunnel, concurrently. It returns nil to let the request through, an
// *AccessError to answer the client with, or any other error, which is
// answered 403 with a generic message (and logged: it may say more than the
// caller should learn).
//
// The relay asks before it knows whether the cluster exists or is
// connected, so an authorizer that refuses every cluster a caller is not
// allowed on, known or not, gives that caller no way to tell unknown,
// forbidden and disconnected clusters apart. Requests importers send with
// Relay.RoundTripper or Relay.DialContext are not asked about: they come
// from the importer's own code.
type ClientAuthorizer interface {
	AuthorizeClient(r *http.Request, clusterID string) error
}

// ClientAuthorizerFunc adapts a function to ClientAuthorizer.
type ClientAuthorizerFunc func(r *http.Request, clusterID string) error

// AuthorizeClient calls f.
func (f ClientAuthorizerFunc) AuthorizeClient(r *http.Request, clusterID string) error {
	return f(r, clusterID)
}

// AccessError is a ClientAuthorizer's refusal: the status code the client
// gets (401 without a valid credential, 403 when not allowed, 429 over a
// limit, 503 when the authorizer cannot decide now) and the message, in a
// Kubernetes Status. Reason is a short stable word for logs and metrics.
type AccessError struct {
	Code    int
	Reason  string
	Message string
}

// Error returns the message.
func (e *AccessError) Error() string {
	return "tunnel: client refused (" + e.Reason + "): " + e.Message
}

// authorize asks the configured authorizer about req, answers a refusal,
// and reports whether the request may go on.
func (r *Relay) authorize(w http.ResponseWriter, req *http.Request, id string) bool {
	if r.cfg.ClientAuthorizer == nil {
		return true
	}
	err := r.cfg.ClientAuthorizer.AuthorizeClient(req, id)
	if err == nil {
		return true
	}
	r.stats.clientRefused()
	var ae *AccessError
	if !errors.As(err, &ae) {
		r.log.Warn("client authorizer failed; refusing", "cluster", id, "remote", req.RemoteAddr, "err", err)
		ae = &AccessError{Code: http.StatusForbidden, Reason: "error", Message: "tunnel: the request is not allowed"}
	}
	// No cluster name in the details: the answer must not depend on
	// whether the cluster exists.
	if req.ProtoMajor != 1 || req.ContentLength == 0 {
		httpx.WriteStatus(w, req, ae.Code, "", ae.Message)
		return false
	}
	// net/http reads up to 256 KiB of an unread body, before answering and
	// again after: a refused caller trickling a body would hold the
	// connection and its goroutine as long as it liked. An HTTP/1.x
	// refusal with a body is the last answer on its connection (it carries
	// its length, so it is complete), and the connection is then closed.
	w.Header().Set("Connection", "close")
	httpx.WriteStatus(w, req, ae.Code, "", ae.Message)
	rc := http.NewResponseController(w)
	if rc.Flush() == nil {
		if conn, _, err := rc.Hijack(); err == nil {
			conn.Close()
		}
	}
	return false
}
