package access

import (
	"net/http"
	"sync"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// Long-lived requests end when their caller's right to them ends: each
// one admitted is kept with what admitted it, and a new policy is asked
// again about each.

// session is an admitted long-lived request: a watch, logs -f, an exec,
// attach or port-forward.
type session struct {
	cluster string
	tok     *tokens.Token // nil for a token passed through unverified
	groups  []string      // resolved for a token with groups overage
	end     func(error)
}

// sessionSet holds the sessions open now.
type sessionSet struct {
	mu  sync.Mutex
	set map[*session]struct{}
}

func (s *sessionSet) add(x *session) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = map[*session]struct{}{}
	}
	s.set[x] = struct{}{}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.set, x)
	}
}

func (s *sessionSet) all() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.set))
	for x := range s.set {
		out = append(out, x)
	}
	return out
}

// errRevoked ends a session its caller may no longer have: the words a
// refused new request gets, and that it was the policy that changed.
var errRevoked = &tunnel.AccessError{Code: http.StatusForbidden, Reason: "revoked",
	Message: "the relay's access policy no longer lets this caller reach the cluster; the session was ended"}

// revoke ends the sessions the policy c no longer admits.
func (a *Authorizer) revoke(c *compiled) {
	for _, s := range a.sessions.all() {
		r := c.clusters[s.cluster]
		refused := r == nil
		switch {
		case refused:
		case s.tok == nil:
			refused = !r.pass
		default:
			refused = r.refuse(s.tok, s.groups) != ""
		}
		if refused {
			a.log.Info("session ended: the policy no longer admits its caller", "cluster", s.cluster, "subject", subjectOf(s.tok))
			s.end(errRevoked)
		}
	}
}

// EndCluster ends every long-lived request admitted to clusterID
// (watches, logs -f, exec, attach, port-forward) with err, which their
// clients are shown: the relay calls it for a cluster it no longer knows.
func (a *Authorizer) EndCluster(clusterID string, err error) {
	for _, s := range a.sessions.all() {
		if s.cluster == clusterID {
			s.end(err)
		}
	}
}

func subjectOf(tok *tokens.Token) string {
	if tok == nil {
		return "(unverified token)"
	}
	return tok.Subject
}

// longLived reports whether r may run for long: a watch, logs -f, or an
// upgrade (exec, attach, port-forward).
func longLived(r *http.Request) bool { return httpx.SessionClass(r) != "" }
