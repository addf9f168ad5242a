package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/logx"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// TokenVerifier verifies a bearer token; *tokens.Verifier is one.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (*tokens.Token, error)
}

// Config configures an Authorizer.
type Config struct {
	// Verifier checks callers' tokens: a *tokens.Verifier for the same
	// issuers and audiences as the agents'. Required.
	Verifier TokenVerifier
	// Policy is the first policy; SetPolicy replaces it. Required.
	Policy *Policy
	// MaxCallers bounds how many (caller, cluster) pairs the limits keep
	// track of at once; default DefaultMaxCallers. Idle ones are forgotten
	// first; past the bound, new callers get 429.
	MaxCallers int
	// GroupResolver, if set, looks up the groups of callers whose token
	// could not carry them (Entra ID's groups overage), for rules that
	// list groups: a graph.Resolver. Without one such callers get in only
	// as listed users or apps.
	GroupResolver tokens.GroupResolver
	// EndedSessions remembers why sessions were ended, so that their
	// carriers are not re-attached; nil: in this process's memory. The
	// replicas of a fleet share one (an etcddir.Directory).
	EndedSessions EndedSessions
	// Logger receives refusals with their reasons (never a token); nil
	// discards them.
	Logger *slog.Logger
}

// DefaultMaxCallers is Config.MaxCallers' default.
const DefaultMaxCallers = 100_000

// Authorizer is the relay's front door: a tunnel.ClientAuthorizer that
// verifies each request's bearer token, checks the policy of the cluster
// it is for, and counts it against the caller's and the cluster's limits.
// It is safe for concurrent use.
type Authorizer struct {
	v          TokenVerifier
	groups     tokens.GroupResolver // nil: overage callers get in only by name
	log        *slog.Logger
	episodes   *logx.Episodes // what a caller without a good token can make happen
	maxCallers int
	policy     atomic.Pointer[compiled]

	mu        sync.Mutex
	clusters  map[string]*budget
	callers   map[callerKey]*budget
	lastSweep time.Time

	sessions   sessionSet    // long-lived requests admitted and not over
	ended      EndedSessions // why some were ended, for a while
	challenges challenges    // the claims challenges callers got lately
}

var _ tunnel.ClientAuthorizer = (*Authorizer)(nil)

type callerKey struct{ cluster, caller string }

// budget is what one cluster, or one caller of a cluster, is using.
type budget struct {
	inflight int // under Authorizer.mu
	limit    *rate.Limiter
}

// compiled is a policy made ready to look things up in.
type compiled struct {
	clusters map[string]*rule
	limits   Limits
}

type rule struct {
	issuers, tenants, users, groups, apps map[string]bool
	pass                                  bool
	limits                                Limits
	expiry                                string // SessionExpiry, "" for OutliveToken
	stepUp                                []StepUp
}

// New returns an Authorizer.
func New(cfg *Config) (*Authorizer, error) {
	if cfg == nil || cfg.Verifier == nil || cfg.Policy == nil {
		return nil, errors.New("access: Config.Verifier and Config.Policy are required")
	}
	a := &Authorizer{
		v: cfg.Verifier, groups: cfg.GroupResolver, log: logx.OrDiscard(cfg.Logger), episodes: logx.NewEpisodes(cfg.Logger, 0), maxCallers: cfg.MaxCallers,
		clusters: map[string]*budget{}, callers: map[callerKey]*budget{},
	}
	if a.maxCallers <= 0 {
		a.maxCallers = DefaultMaxCallers
	}
	if a.ended = cfg.EndedSessions; a.ended == nil {
		a.ended = &endedSet{}
	}
	if err := a.SetPolicy(cfg.Policy); err != nil {
		return nil, err
	}
	return a, nil
}

// SetPolicy replaces the policy for the requests that follow; requests in
// flight keep counting against the limits, and long-lived ones (watches,
// logs -f, exec, attach, port-forward) the new policy would refuse are
// ended, with words that say so (tunnel.EndRequest). An invalid policy
// is refused and the old one stays.
func (a *Authorizer) SetPolicy(p *Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	c := &compiled{clusters: make(map[string]*rule, len(p.Clusters)), limits: p.Limits.withDefaults(nil)}
	for id, cl := range p.Clusters {
		c.clusters[id] = &rule{
			issuers: set(cl.Issuers), tenants: set(cl.Tenants), users: set(cl.Users), groups: set(cl.Groups), apps: set(cl.Apps),
			pass: cl.PassThroughUnverified, limits: cl.Limits.orPolicy(p.Limits), stepUp: slices.Clone(cl.StepUp),
		}
		if cl.SessionExpiry != OutliveToken {
			c.clusters[id].expiry = cl.SessionExpiry
		}
	}
	a.policy.Store(c)
	a.revoke(c)
	return nil
}

func (l *Limits) orPolicy(p Limits) Limits {
	if l == nil {
		return p.withDefaults(nil)
	}
	return l.withDefaults(&p)
}

func set(xs []string) map[string]bool {
	if len(xs) == 0 {
		return nil
	}
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// The words refused callers read. errForbidden is the same whether the
// cluster is unknown, not open to the caller or disconnected, and it
// names no cluster.
var (
	errForbidden = &tunnel.AccessError{Code: http.StatusForbidden, Reason: "forbidden",
		Message: "the relay does not let this caller reach that cluster, or there is no such cluster"}
	errNoToken = &tunnel.AccessError{Code: http.StatusUnauthorized, Reason: "no-token",
		Message: "the relay needs a bearer token from the cluster's identity provider (Authorization: Bearer …)"}
)

// AuthorizeClient implements tunnel.ClientAuthorizer.
func (a *Authorizer) AuthorizeClient(r *http.Request, clusterID string) (func(), error) {
	raw, err := httpx.BearerToken(r.Header)
	if err != nil {
		return nil, bearerError(err)
	}
	p := a.policy.Load()
	c := p.clusters[clusterID]
	var caller string
	var groups []string
	tok, err := a.v.Verify(r.Context(), raw)
	if of := sessionOf(r.Header); of != "" && err == nil && c != nil {
		// A session ended here does not re-attach; its caller reads why
		// (asked before the cluster's rule, whose refusal says less; a
		// cluster the policy does not list is refused below, and makes
		// no budget). The question may cost a read of etcd: it counts
		// against the caller's rate first.
		release, err := a.admit(clusterID, tok.Caller(), c.limits)
		if err != nil {
			return nil, err
		}
		release()
		if ended := a.endedError(r.Context(), of); ended != nil {
			return nil, ended
		}
	}
	switch {
	case err == nil:
		var why string
		why, groups = a.refusal(r.Context(), c, clusterID, tok)
		if why != "" {
			a.log.Info("caller refused", "cluster", clusterID, "issuer", tok.Issuer, "subject", tok.Subject, "tenant", tok.TenantID, "reason", why)
			return nil, errForbidden
		}
		caller = tok.Caller()
		tunnel.NoteCaller(r.Context(), tok.ObjectID())
	case c != nil && c.pass && tokens.IsForeign(err):
		// Nothing is known of this caller but its token: each token
		// counts as one caller, under the cluster's limits.
		caller = tokens.UnverifiedCaller(raw)
		tok = nil
		tunnel.NoteCaller(r.Context(), "unverified")
	default:
		return nil, a.tokenError(err)
	}
	if missing, req, ok := stepUpFor(c.stepUp, r, tok); !ok {
		return nil, errUncleanPath
	} else if len(missing) > 0 {
		ae := errStepUp(req, missing)
		if tok != nil {
			a.challenges.note(callerKey{clusterID, caller}, ClaimsChallenge(missing...), a.maxCallers, time.Now())
		}
		a.log.Info("caller asked to step up", "cluster", clusterID, "subject", subjectOf(tok), "authContexts", missing)
		return nil, ae
	}
	release, err := a.admit(clusterID, caller, c.limits)
	if err != nil {
		return nil, err
	}
	end := tunnel.EndRequest(r.Context())
	if end == nil || !longLived(r) {
		return release, nil
	}
	if id := tunnel.RequestID(r.Context()); id != "" {
		// A carrier of a session that re-attaches later names this ID:
		// if the session is ended here, so is its re-attaching.
		tunnelEnd := end
		if of := sessionOf(r.Header); of != "" {
			id = of // a re-attaching carrier: the session is its first's
		}
		end = func(err error) {
			if ae, ok := err.(*tunnel.AccessError); !ok || !ae.ClientMayResume {
				a.noteEnded(id, err)
			}
			tunnelEnd(err)
		}
	}
	s := &session{cluster: clusterID, caller: caller, tok: tok, groups: groups, end: end}
	if tok != nil {
		s.key = sessionKey(r.Header)
		s.expireAt(tok.Expiry, c.expiry)
	}
	remove := a.sessions.add(s)
	if a.policy.Load() != p {
		// The policy changed while this request was being admitted: ask
		// the new one too.
		a.revoke(a.policy.Load())
	}
	return func() { remove(); release() }, nil
}

// bearerError is the refusal of a request whose Authorization header
// holds no single bearer token.
func bearerError(err error) error {
	if errors.Is(err, httpx.ErrNoBearer) {
		return errNoToken
	}
	return &tunnel.AccessError{Code: http.StatusUnauthorized, Reason: "bad-authorization", Message: "the relay needs one bearer token: " + err.Error()}
}

// tokenError is the refusal of a token the verifier did not accept.
func (a *Authorizer) tokenError(err error) error {
	switch {
	case errors.Is(err, tokens.ErrKeySet):
		a.episodes.Warn("cannot verify tokens: issuer keys unavailable", "err", err)
		return &tunnel.AccessError{Code: http.StatusServiceUnavailable, Reason: "keys-unavailable", RetryAfter: 5 * time.Second,
			Message: "the relay cannot check tokens now: the identity provider's keys are unavailable; retry"}
	case errors.Is(err, context.Canceled):
		return &tunnel.AccessError{Code: http.StatusForbidden, Reason: "canceled", Message: "the request was canceled"}
	}
	// The token's own fault, the same for every cluster. The sentinels
	// never contain the token.
	return &tunnel.AccessError{Code: http.StatusUnauthorized, Reason: "bad-token", Message: "the relay did not accept the token: " + err.Error() + advice(err)}
}

// advice is what a caller whose token was refused for err can do, where
// the error does not say it already.
func advice(err error) string {
	switch {
	case errors.Is(err, tokens.ErrExpired):
		return "" // "get a new one"
	case errors.Is(err, tokens.ErrIssuer), errors.Is(err, tokens.ErrTenant):
		return "; sign in to a tenant this relay accepts (az login --tenant …, or -tenant-id)"
	case errors.Is(err, tokens.ErrAudience):
		return "; get a token for the cluster's server app (az account get-access-token --resource …, or -server-id)"
	case errors.Is(err, tokens.ErrPoPRequired), errors.Is(err, tokens.ErrPoP):
		return "; sign in with proof of possession (-pop-host)"
	}
	return "; sign in again"
}

// refusal says why c does not let tok in, or "", resolving the groups of
// a token whose groups did not fit in it (which it returns) when that may
// let it in.
func (a *Authorizer) refusal(ctx context.Context, c *rule, clusterID string, tok *tokens.Token) (why string, groups []string) {
	why = c.refuse(tok, nil)
	if why != whyOverage || a.groups == nil {
		return why, nil
	}
	groups, err := a.groups.ResolveGroups(ctx, tok)
	if err != nil {
		a.log.Warn("cannot resolve a caller's groups (overage)", "cluster", clusterID, "subject", tok.Subject, "err", err)
		return "groups overage, and resolving the groups failed", nil
	}
	return c.refuse(tok, groups), groups
}

// whyOverage is refuse's reason for a token whose groups did not fit in
// it: resolving them may still let it in.
const whyOverage = "not a listed user or app, and the token has no groups (groups overage)"

// refuse says why the rule does not let tok in, for the relay's log only,
// or "" if it does; resolved are the caller's groups when the token could
// not carry them. A nil rule is a cluster the policy does not list.
func (c *rule) refuse(tok *tokens.Token, resolved []string) string {
	switch {
	case c == nil:
		return "no such cluster in the policy"
	case c.issuers != nil && !c.issuers[tok.Issuer]:
		return "issuer not allowed on the cluster"
	case c.tenants != nil && !c.tenants[tok.TenantID]:
		return "tenant not allowed on the cluster"
	case c.users == nil && c.groups == nil && c.apps == nil:
		return ""
	case c.users[tok.ObjectID()] || c.apps[tok.AppID()]:
		return ""
	}
	if gs, ok := tok.Claims["groups"].([]any); ok {
		for _, g := range gs {
			if s, ok := g.(string); ok && c.groups[s] {
				return ""
			}
		}
	}
	for _, g := range resolved {
		if c.groups[g] {
			return ""
		}
	}
	if _, overage := tok.GroupsOverage(); overage && c.groups != nil && resolved == nil {
		return whyOverage
	}
	return "not a listed user, group or app"
}

// admit counts a request against the cluster's and the caller's limits,
// or refuses it with 429.
func (a *Authorizer) admit(clusterID, caller string, lim Limits) (func(), error) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	cb := a.clusters[clusterID]
	if cb == nil {
		cb = &budget{limit: rate.NewLimiter(rate.Limit(lim.ClusterRate), lim.ClusterBurst)}
		a.clusters[clusterID] = cb
	}
	key := callerKey{clusterID, caller}
	kb := a.callers[key]
	if kb == nil {
		if len(a.callers) >= a.maxCallers && !a.sweep(now) {
			a.log.Warn("too many callers tracked; refusing new ones", "max", a.maxCallers)
			return nil, &tunnel.AccessError{Code: http.StatusTooManyRequests, Reason: "callers", RetryAfter: time.Second,
				Message: "the relay is serving too many callers; retry"}
		}
		kb = &budget{limit: rate.NewLimiter(rate.Limit(lim.CallerRate), lim.CallerBurst)}
		a.callers[key] = kb
	}
	cb.retune(lim.ClusterRate, lim.ClusterBurst, now)
	kb.retune(lim.CallerRate, lim.CallerBurst, now)
	switch {
	case kb.inflight >= lim.CallerStreams:
		return nil, &tunnel.AccessError{Code: http.StatusTooManyRequests, Reason: "caller-streams", RetryAfter: time.Second,
			Message: fmt.Sprintf("this caller has %d requests open to the cluster, the most one caller may have (watches, logs -f, exec and port-forward each hold one); close some or retry", kb.inflight)}
	case cb.inflight >= lim.ClusterStreams:
		return nil, &tunnel.AccessError{Code: http.StatusTooManyRequests, Reason: "cluster-streams", RetryAfter: time.Second,
			Message: fmt.Sprintf("the cluster has %d requests open through the relay, its limit; retry", cb.inflight)}
	}
	kr := kb.limit.ReserveN(now, 1)
	cr := cb.limit.ReserveN(now, 1)
	if d := max(kr.DelayFrom(now), cr.DelayFrom(now)); d > 0 {
		kr.CancelAt(now)
		cr.CancelAt(now)
		reason, what := "caller-rate", fmt.Sprintf("this caller's %g requests a second", lim.CallerRate)
		if cr.DelayFrom(now) >= kr.DelayFrom(now) {
			reason, what = "cluster-rate", fmt.Sprintf("the cluster's %g requests a second", lim.ClusterRate)
		}
		return nil, &tunnel.AccessError{Code: http.StatusTooManyRequests, Reason: reason, RetryAfter: d,
			Message: "over " + what + " through the relay; retry"}
	}
	cb.inflight++
	kb.inflight++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			cb.inflight--
			kb.inflight--
			a.mu.Unlock()
		})
	}, nil
}

// retune follows a policy change of the budget's rate.
func (b *budget) retune(r float64, burst int, now time.Time) {
	if b.limit.Limit() != rate.Limit(r) {
		b.limit.SetLimitAt(now, rate.Limit(r))
	}
	if b.limit.Burst() != burst {
		b.limit.SetBurstAt(now, burst)
	}
}

// sweep forgets idle callers: nothing in flight and a full bucket, so
// forgetting them changes nothing. It runs at most once a second and
// reports whether there is room now. Called with a.mu held.
func (a *Authorizer) sweep(now time.Time) bool {
	if now.Sub(a.lastSweep) >= time.Second {
		a.lastSweep = now
		for k, b := range a.callers {
			if b.inflight == 0 && b.limit.TokensAt(now) >= float64(b.limit.Burst()) {
				delete(a.callers, k)
			}
		}
	}
	return len(a.callers) < a.maxCallers
}
