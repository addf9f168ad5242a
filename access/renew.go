package access

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// Renewing sessions: a client that keeps sessions open (the client
// proxy) sends each long-lived request with a session key of its own, a
// secret, and later presents a fresh token with that key. The relay ties
// the key to the sessions and never passes it on; nobody without it can
// touch them.

// HeaderSessionKey carries a client's session key: 16 to 128 bytes of its
// own secret, the same on each long-lived request whose sessions it will
// renew together. The relay keeps its hash and removes the header.
const HeaderSessionKey = "Clusterconnect-Session-Key"

// HeaderSessionOf names, on a carrier that re-attaches a session (package
// sessions/reattach), the request ID the relay gave the carrier that
// opened it. A session the relay ended (its caller's access revoked, its
// token expired, its renewal refused) is not re-attached: the carrier is
// refused with the words that ended it. A client that leaves the header
// out re-attaches only as the agent and the relay admit it anew: the same
// caller, with a token the relay accepts now.
const HeaderSessionOf = "Clusterconnect-Session-Of"

// sessionOf is the ID HeaderSessionOf names, if it is one an ID may be.
func sessionOf(h http.Header) string {
	vs := h.Values(HeaderSessionOf)
	if len(vs) == 0 {
		return ""
	}
	return httpx.RequestID(http.Header{httpx.HeaderAuditID: vs})
}

// EndedSessions remembers, for a while, why the Authorizer ended
// sessions, by their first request's ID, so that their carriers are not
// re-attached (HeaderSessionOf). The default keeps it in memory; the
// replicas of a fleet share one (etcddir.Directory), so that a carrier
// re-attaching through another replica is refused too.
type EndedSessions interface {
	// NoteEnded keeps why (opaque bytes) for id until until.
	NoteEnded(ctx context.Context, id string, why []byte, until time.Time) error
	// Ended returns what was kept for id, or nil.
	Ended(ctx context.Context, id string) ([]byte, error)
}

// endedSet is the in-memory EndedSessions: at most maxEnded, the oldest
// forgotten first.
type endedSet struct {
	mu    sync.Mutex
	why   map[string]endedAt
	order []string
}

type endedAt struct {
	why   []byte
	until time.Time
}

const (
	// endedFor outlasts a session's grace period (reattach.DefaultGrace)
	// and the client's tries within it.
	endedFor = 2 * time.Minute
	maxEnded = 10_000
)

func (s *endedSet) NoteEnded(_ context.Context, id string, why []byte, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.why == nil {
		s.why = map[string]endedAt{}
	}
	if _, ok := s.why[id]; ok {
		return nil
	}
	if len(s.order) >= maxEnded {
		delete(s.why, s.order[0])
		s.order = s.order[1:]
	}
	s.why[id] = endedAt{why, until}
	s.order = append(s.order, id)
	return nil
}

func (s *endedSet) Ended(_ context.Context, id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.why[id]
	if !ok || time.Now().After(e.until) {
		return nil, nil
	}
	return e.why, nil
}

// noteEnded keeps why the session whose first request had this ID was
// ended. It is kept before the session is cut, so that a carrier that
// re-attaches at once, through any replica, finds it: in a fleet an
// ending waits for etcd (a write, at most 5 s).
func (a *Authorizer) noteEnded(id string, err error) {
	var ae *tunnel.AccessError
	if !errors.As(err, &ae) {
		return
	}
	why, _ := json.Marshal(ae)
	if err := a.ended.NoteEnded(context.Background(), id, why, time.Now().Add(endedFor)); err != nil {
		a.log.Warn("cannot note an ended session; its carrier may re-attach elsewhere", "err", err)
	}
}

// endedError is why the session whose first request had this ID was
// ended, if it was, lately; nil if it was not, or if that cannot be told
// now (the session's caller and the agent are still checked).
func (a *Authorizer) endedError(ctx context.Context, id string) error {
	why, err := a.ended.Ended(ctx, id)
	if err != nil {
		a.log.Warn("cannot tell whether a session was ended", "err", err)
		return nil
	}
	if why == nil {
		return nil
	}
	var ae tunnel.AccessError
	if json.Unmarshal(why, &ae) != nil {
		return nil
	}
	return &ae
}

// sessionKey is the hash of the session key h carries, or zero.
func sessionKey(h http.Header) [32]byte {
	v := h.Get(HeaderSessionKey)
	if len(v) < 16 || len(v) > 128 {
		return [32]byte{}
	}
	return sha256.Sum256([]byte(v))
}

// RenewResult is the answer to a renewal.
type RenewResult struct {
	// Renewed counts the sessions that now run until Expiry.
	Renewed int `json:"renewed"`
	// Expiry is the token's, which the renewed sessions now end at.
	Expiry time.Time `json:"expiry"`
}

// Errors that end sessions at a renewal.
var (
	errRenewedByAnother = &tunnel.AccessError{Code: http.StatusUnauthorized, Reason: "revoked",
		Message: "a token of another caller was presented to renew this session; it was ended: sign in as its caller and run the command again"}
	errRenewRefused = func(why string) error {
		return &tunnel.AccessError{Code: http.StatusUnauthorized, Reason: "expired",
			Message: "the token presented to renew this session was refused (" + why + "); it was ended: sign in again and run the command again"}
	}
)

// RenewHandler serves renewals: POST with a fresh bearer token and
// HeaderSessionKey, for the cluster that the pattern's {cluster}
// wildcard names (the relay serves it at POST
// /sessions/renew/{cluster}). The sessions opened on that cluster with
// that key, by the token's caller, then end when the fresh token
// expires, where the cluster's SessionExpiry is RenewToken. A token the
// relay refuses, or one of another caller, ends them at once, with words
// their clients are shown: whoever holds the key may end them, nobody
// else may touch them. A renewal counts against the caller's request
// rate as any request does.
func (a *Authorizer) RenewHandler() http.Handler {
	return http.HandlerFunc(a.renew)
}

func (a *Authorizer) renew(w http.ResponseWriter, r *http.Request) {
	cluster := r.PathValue("cluster")
	switch {
	case r.Method != http.MethodPost:
		httpx.Refuse(w, r, http.StatusMethodNotAllowed, "", "access: renew sessions with POST")
		return
	case httpx.HasBody(r):
		// Never read: a caller trickling one must not hold the connection.
		httpx.Refuse(w, r, http.StatusBadRequest, "", "access: a renewal has no body")
		return
	}
	key := sessionKey(r.Header)
	if key == ([32]byte{}) {
		httpx.WriteStatus(w, r, http.StatusBadRequest, "", "access: a renewal needs the sessions' key ("+HeaderSessionKey+", 16 to 128 bytes)")
		return
	}
	raw, err := httpx.BearerToken(r.Header)
	if err != nil {
		httpx.WriteStatus(w, r, http.StatusUnauthorized, "", "access: a renewal needs a bearer token: "+err.Error())
		return
	}
	p := a.policy.Load()
	c := p.clusters[cluster]
	tok, err := a.v.Verify(r.Context(), raw)
	if err != nil {
		if errors.Is(err, tokens.ErrKeySet) || r.Context().Err() != nil {
			// Not the token's fault: the sessions go on.
			httpx.RetryAfter(w, 5*time.Second)
			httpx.WriteStatus(w, r, http.StatusServiceUnavailable, "", "access: the relay cannot check tokens now; retry")
			return
		}
		// The key's holder presented a token the relay refuses: its
		// sessions end, as a new request of theirs would be refused.
		a.endAll(key, cluster, errRenewRefused(err.Error()))
		httpx.WriteStatus(w, r, http.StatusUnauthorized, "", "access: the relay did not accept the token: "+err.Error())
		return
	}
	if why, _ := a.refusal(r.Context(), c, cluster, tok); why != "" {
		a.endAll(key, cluster, errRevoked)
		httpx.WriteStatus(w, r, errForbidden.Code, "", errForbidden.Message)
		return
	}
	release, err := a.admit(cluster, tok.Caller(), c.limits)
	if err != nil {
		var ae *tunnel.AccessError
		errors.As(err, &ae)
		httpx.RetryAfter(w, ae.RetryAfter)
		httpx.WriteStatus(w, r, ae.Code, "", ae.Message)
		return
	}
	release()
	res := RenewResult{Expiry: tok.Expiry}
	for _, s := range a.sessions.withKey(key, cluster) {
		switch {
		case s.caller != tok.Caller():
			a.log.Info("session ended: renewed with another caller's token", "cluster", cluster, "subject", subjectOf(s.tok), "by", tok.Subject)
			s.end(errRenewedByAnother)
		case c.expiry == RenewToken:
			s.expireAt(tok.Expiry, c.expiry)
			res.Renewed++
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}

// endAll ends the sessions of cluster opened with key.
func (a *Authorizer) endAll(key [32]byte, cluster string, err error) {
	for _, s := range a.sessions.withKey(key, cluster) {
		s.end(err)
	}
}
