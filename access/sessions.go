package access

import (
	"net/http"
	"sync"
	"time"

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
	caller  string        // who opened it (tokens.Token.Caller)
	tok     *tokens.Token // nil for a token passed through unverified
	groups  []string      // resolved for a token with groups overage
	end     func(error)
	key     [32]byte // the hash of its client's session key; zero: none

	mu     sync.Mutex
	expiry time.Time // of its token, or of the last one presented for it
	mode   string    // the cluster's SessionExpiry; "" to outlive the token
	timer  *time.Timer
}

// expireAt has the session end at t if mode says so, from now on.
func (s *session) expireAt(t time.Time, mode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiry, s.mode = t, mode
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if mode == EndAtExpiry || mode == RenewToken {
		s.timer = time.AfterFunc(time.Until(t), func() { s.end(expiredError(mode, t)) })
	}
}

func (s *session) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
	}
}

// expiredError ends a session whose token expired.
func expiredError(mode string, at time.Time) error {
	msg := "the token this session was opened with expired at " + at.UTC().Format(time.RFC3339) +
		", and the relay ends sessions when their token expires; sign in again if asked, and run the command again"
	if mode == RenewToken {
		msg = "the token this session was opened with expired at " + at.UTC().Format(time.RFC3339) +
			" and no fresh one was presented for it (the client proxy, clusterconnect proxy serve, renews its sessions; kubectl talking to the relay directly cannot); run the command again"
	}
	// Under RenewToken, a client that renews (the client proxy) resumes
	// the watch and re-attaches the session with its fresh token, which
	// the relay and the agent check anew: a renewal that reached another
	// replica of a fleet than the session's still keeps it.
	return &tunnel.AccessError{Code: http.StatusUnauthorized, Reason: "expired", Message: msg, ClientMayResume: mode == RenewToken}
}

// sessionSet holds the sessions open now, and those of each client's
// session key.
type sessionSet struct {
	mu    sync.Mutex
	set   map[*session]struct{}
	byKey map[[32]byte]map[*session]struct{}
}

func (s *sessionSet) add(x *session) (remove func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set, s.byKey = map[*session]struct{}{}, map[[32]byte]map[*session]struct{}{}
	}
	s.set[x] = struct{}{}
	if x.key != ([32]byte{}) {
		if s.byKey[x.key] == nil {
			s.byKey[x.key] = map[*session]struct{}{}
		}
		s.byKey[x.key][x] = struct{}{}
	}
	return func() {
		x.stop()
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.set, x)
		if m := s.byKey[x.key]; m != nil {
			delete(m, x)
			if len(m) == 0 {
				delete(s.byKey, x.key)
			}
		}
	}
}

// withKey returns the sessions of cluster opened with the session key
// whose hash is key.
func (s *sessionSet) withKey(key [32]byte, cluster string) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for x := range s.byKey[key] {
		if x.cluster == cluster {
			out = append(out, x)
		}
	}
	return out
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
			continue
		}
		if s.tok != nil {
			s.mu.Lock()
			expiry, changed := s.expiry, s.mode != r.expiry
			s.mu.Unlock()
			if changed {
				s.expireAt(expiry, r.expiry)
			}
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
