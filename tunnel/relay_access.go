package tunnel

import (
	"errors"
	"net/http"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// A ClientAuthorizer decides, on the relay, whether a client's request may
// reach a cluster. It is called for every request under /clusters/{id}/
// before the cluster is looked up and before anything of the request enters
// a tunnel, concurrently. It returns a nil error to let the request
// through, an *AccessError to answer the client with, or any other error,
// which is answered 403 with a generic message (and logged: it may say more
// than the caller should learn).
//
// With a nil error it may return a release function: the relay calls it
// once when the request is over (its response copied, or its upgraded
// connection closed), which is how an authorizer counts a caller's
// concurrent requests.
//
// The relay asks before it knows whether the cluster exists or is
// connected, so an authorizer that refuses every cluster a caller is not
// allowed on, known or not, gives that caller no way to tell unknown,
// forbidden and disconnected clusters apart. Requests importers send with
// Relay.RoundTripper or Relay.DialContext are not asked about: they come
// from the importer's own code.
type ClientAuthorizer interface {
	AuthorizeClient(r *http.Request, clusterID string) (release func(), err error)
}

// ClientAuthorizerFunc adapts a function that counts nothing to
// ClientAuthorizer.
type ClientAuthorizerFunc func(r *http.Request, clusterID string) error

// AuthorizeClient calls f.
func (f ClientAuthorizerFunc) AuthorizeClient(r *http.Request, clusterID string) (func(), error) {
	return nil, f(r, clusterID)
}

// AccessError is a ClientAuthorizer's refusal: the status code the client
// gets (401 without a valid credential, 403 when not allowed, 429 over a
// limit, 503 when the authorizer cannot decide now) and the message, in a
// Kubernetes Status. Reason is a short stable word for logs and metrics.
// RetryAfter, if positive, is sent as Retry-After (whole seconds): kubectl
// waits that long and tries again, up to ten times.
type AccessError struct {
	Code       int
	Reason     string
	Message    string
	RetryAfter time.Duration
	// Challenge, if set on a 401, is the WWW-Authenticate value sent
	// instead of the plain Bearer one: a claims challenge that asks the
	// client to sign in again for more (error="insufficient_claims").
	Challenge string
	// ClientMayResume, on an error that ends a request (EndRequest), says
	// that a client able to present a fresh credential may ask for the
	// rest of it again, as the client proxy resumes a watch and
	// re-attaches a session: a layer in front of the relay resumes it,
	// and the client only sees the error where nothing can.
	ClientMayResume bool
}

// Error returns the message.
func (e *AccessError) Error() string {
	return "tunnel: client refused (" + e.Reason + "): " + e.Message
}

// HTTPStatus is the answer's status code, for a layer that shows the
// refusal to a client in its own words (package sessions).
func (e *AccessError) HTTPStatus() int { return e.Code }

// ClientMessage is what the client is told.
func (e *AccessError) ClientMessage() string { return e.Message }

// ResumableByClient reports ClientMayResume, for package sessions.
func (e *AccessError) ResumableByClient() bool { return e.ClientMayResume }

// authorize asks the configured authorizer about req and answers a
// refusal. It reports whether the request may go on, and returns what to
// call when it is over.
func (r *Relay) authorize(w http.ResponseWriter, req *http.Request, id string) (release func(), ok bool) {
	if r.cfg.ClientAuthorizer == nil {
		return noRelease, true
	}
	release, err := r.cfg.ClientAuthorizer.AuthorizeClient(req, id)
	if err == nil {
		if release == nil {
			release = noRelease
		}
		return release, true
	}
	r.stats.clientRefused()
	var ae *AccessError
	if !errors.As(err, &ae) {
		r.episodes.Warn("client authorizer failed; refusing", "cluster", id, "remote", req.RemoteAddr, "err", err)
		ae = &AccessError{Code: http.StatusForbidden, Reason: "error", Message: "tunnel: the request is not allowed"}
	}
	if cr, ok := req.Context().Value(clientRequestKey{}).(*clientRequest); ok {
		cr.refused = ae.Reason
	}
	if ae.RetryAfter > 0 {
		httpx.RetryAfter(w, ae.RetryAfter)
	}
	if ae.Challenge != "" {
		w.Header().Set("Www-Authenticate", ae.Challenge)
	}
	// No cluster name in the details: the answer must not depend on
	// whether the cluster exists.
	httpx.Refuse(w, req, ae.Code, "", ae.Message)
	return nil, false
}

func noRelease() {}
