package tunnel

import (
	"errors"
	"fmt"

	"github.com/clusterconnect/clusterconnect/internal/h2client"
)

// The errors of this package, in one place. Each exported error value is a
// sentinel to test with errors.Is; the typed errors match one of them.

// ErrUnauthorized is wrapped by every error an [Authenticator] returns for a
// credential it does not accept.
var ErrUnauthorized = errors.New("tunnel: agent credential rejected")

// AuthError says why a credential was rejected. Reason is a short stable word
// for metrics ("unknown-cluster", "bad-secret", "expired", "replayed", …);
// the message never contains the credential.
type AuthError struct {
	Reason string
	Err    error
}

// Error gives the reason and, when known, the detail.
func (e *AuthError) Error() string {
	if e.Err == nil {
		return "tunnel: agent credential rejected: " + e.Reason
	}
	return fmt.Sprintf("tunnel: agent credential rejected (%s): %v", e.Reason, e.Err)
}

// Unwrap returns the detail.
func (e *AuthError) Unwrap() error { return e.Err }

// Is makes every AuthError match ErrUnauthorized.
func (e *AuthError) Is(target error) bool { return target == ErrUnauthorized }

// ErrNotConnected is returned (and answered with 503) for a cluster with no
// live tunnel connection.
var ErrNotConnected = errors.New("tunnel: cluster not connected")

// ErrBusy is returned (and answered with 503) when every connection of a
// cluster is at its stream limit or going away.
var ErrBusy = errors.New("tunnel: every tunnel connection of the cluster is busy")

// ErrRelayClosed is returned (and answered with 503) once Relay.Close has
// been called.
var ErrRelayClosed = errors.New("tunnel: the relay is closed")

// ErrHeadersTooLarge is returned (and answered with 431) for a request
// whose header list, counted as HTTP/2 counts it, is over what agents
// accept (RelayConfig.MaxHeaderBytes). Nothing is sent to the agent.
var ErrHeadersTooLarge = h2client.ErrHeadersTooLarge

// ErrBadHandshake is wrapped by every error [ParseHandshake] returns.
var ErrBadHandshake = errors.New("tunnel: bad handshake")

// VersionError reports an agent that offered no protocol version the relay
// speaks.
type VersionError struct {
	Offered []string
}

// Error names the versions offered and the one spoken.
func (e *VersionError) Error() string {
	return fmt.Sprintf("tunnel: agent offered protocols %q; this relay speaks %s", e.Offered, ProtocolV1)
}

// Is makes a VersionError match ErrBadHandshake.
func (e *VersionError) Is(target error) bool { return target == ErrBadHandshake }

// ErrUpgradeBody refuses an HTTP/1.1 Upgrade request that carries a body.
// Kubernetes' streaming protocols (exec, attach, port-forward over SPDY or
// WebSocket) send none; a body would have to reach the agent before its
// answer, and a client trickling one would hold a tunnel stream for as
// long as it liked. Clients get 400.
var ErrUpgradeBody = errors.New("tunnel: an upgrade request may not carry a body")

// ErrAgentTimeout is returned when an agent does not begin to answer an
// upgrade within RelayConfig.UpgradeTimeout. Clients get 504.
var ErrAgentTimeout = errors.New("tunnel: the agent did not answer in time")
