package access

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// StepUp asks for a stronger sign-in for some of a cluster's requests: a
// request it covers passes only with a token whose acrs claim names
// AuthContext, a Microsoft Entra Conditional Access authentication
// context (c1 to c99) that the tenant ties to what it asks of a person
// (multifactor, a compliant device, a fresh sign-in). Other tokens get
// 401 with a claims challenge (WWW-Authenticate: Bearer
// error="insufficient_claims", claims="…"), as Entra's protocol for
// authentication contexts has any API do: the client signs in again
// asking for that context, and retries.
type StepUp struct {
	// AuthContext is the authentication context's ID. Required.
	AuthContext string `json:"authContext"`
	// Resources the rule covers, as RBAC names them: "secrets", a
	// subresource "pods/exec", every subresource "pods/*", a named
	// group "deployments.apps", or "*" for every resource. Required.
	Resources []string `json:"resources"`
	// Verbs the rule covers (get, list, watch, create, update, patch,
	// delete, deletecollection); empty: every verb. An exec, attach or
	// port-forward is a create (or a get, as older kubectl sends it).
	Verbs []string `json:"verbs,omitempty"`
}

var authContextID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (s StepUp) validate() error {
	switch {
	case !authContextID.MatchString(s.AuthContext):
		return fmt.Errorf("stepUp: authContext %q: an ID such as c1", s.AuthContext)
	case len(s.Resources) == 0:
		return fmt.Errorf("stepUp %s: resources is required (\"pods/exec\", \"secrets\", \"*\")", s.AuthContext)
	case slices.Contains(s.Resources, "") || slices.Contains(s.Verbs, ""):
		return fmt.Errorf("stepUp %s: an empty resource or verb", s.AuthContext)
	}
	return nil
}

// covers reports whether the rule covers r.
func (s StepUp) covers(r APIRequest) bool {
	if r.Resource == "" || (len(s.Verbs) > 0 && !slices.Contains(s.Verbs, r.Verb)) {
		return false
	}
	for _, res := range s.Resources {
		name, sub, hasSub := strings.Cut(res, "/")
		switch {
		case res == "*":
			return true
		case name != r.Resource:
		case !hasSub && r.Subresource == "", hasSub && (sub == "*" || sub == r.Subresource):
			return true
		}
	}
	return false
}

// stepUpFor returns the authentication contexts of the rules that cover
// r and that tok does not carry (nil tok carries none), r as read, and
// whether r's path could be read at all.
func stepUpFor(rules []StepUp, r *http.Request, tok *tokens.Token) (missing []string, req APIRequest, ok bool) {
	if len(rules) == 0 {
		return nil, req, true
	}
	req, ok = ParseAPIRequest(r.Method, r.URL.Path, func(k string) string {
		if !strings.Contains(r.URL.RawQuery, k) {
			return "" // no map made for nothing: kubectl's lists have ?limit=500
		}
		return r.URL.Query().Get(k)
	})
	if !ok {
		return nil, req, false
	}
	for _, s := range rules {
		if s.covers(req) && (tok == nil || !tok.HasAuthContext(s.AuthContext)) && !slices.Contains(missing, s.AuthContext) {
			missing = append(missing, s.AuthContext)
		}
	}
	return missing, req, true
}

// ClaimsChallenge is the claims parameter that asks Entra ID for a token
// carrying the authentication contexts ids, as a claims challenge names
// it: {"access_token":{"acrs":{"essential":true,"value":"c1"}}} for one,
// "values" for several.
func ClaimsChallenge(ids ...string) string {
	acrs := map[string]any{"essential": true}
	if len(ids) == 1 {
		acrs["value"] = ids[0]
	} else {
		acrs["values"] = ids
	}
	b, _ := json.Marshal(map[string]any{"access_token": map[string]any{"acrs": acrs}})
	return string(b)
}

// errStepUp is the refusal of req, which needs the authentication
// contexts missing: 401 with a claims challenge.
func errStepUp(req APIRequest, missing []string) *tunnel.AccessError {
	what := req.Resource
	if req.Subresource != "" {
		what += "/" + req.Subresource
	}
	claims := ClaimsChallenge(missing...)
	return &tunnel.AccessError{Code: http.StatusUnauthorized, Reason: "step-up",
		Message: fmt.Sprintf("this cluster asks for a stronger sign-in (authentication context %s) to %s %s: "+
			"the client proxy and proxy token sign in again by themselves (if kubectl stopped here, run the command again); "+
			"another client must answer the claims challenge in WWW-Authenticate", strings.Join(missing, ", "), req.Verb, what),
		Challenge: `Bearer realm="clusterconnect", error="insufficient_claims", claims="` + base64.StdEncoding.EncodeToString([]byte(claims)) + `"`,
	}
}

var errUncleanPath = &tunnel.AccessError{Code: http.StatusBadRequest, Reason: "path",
	Message: "the relay takes no path with empty, \".\" or \"..\" segments for this cluster"}

// challenges remembers, for a little while, the claims challenge each
// caller last got for a cluster, for an exec credential plugin, which
// never sees kubectl's responses, to ask for when kubectl runs it again
// after the 401 (ChallengeHandler).
type challenges struct {
	mu sync.Mutex
	m  map[callerKey]challenge
}

type challenge struct {
	claims string
	until  time.Time
}

// challengeFor is how long a challenge is remembered: kubectl runs the
// plugin again at once.
const challengeFor = 2 * time.Minute

func (c *challenges) note(k callerKey, claims string, max int, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[callerKey]challenge{}
	}
	if len(c.m) >= max {
		for key, ch := range c.m {
			if now.After(ch.until) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= max {
			return // the plugin's caller then signs in on the next try
		}
	}
	c.m[k] = challenge{claims: claims, until: now.Add(challengeFor)}
}

func (c *challenges) take(k callerKey, now time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.m[k]
	delete(c.m, k)
	if !ok || now.After(ch.until) {
		return ""
	}
	return ch.claims
}

// ChallengeHandler answers GET {cluster} (the relay serves it at
// relay.ChallengePath + cluster) with the claims challenge the bearer
// token's caller last got for that cluster, within the last two minutes,
// as {"claims": "…"}, once; 204 if none. It is for an exec credential
// plugin: kubectl runs it again after a 401 but never shows it the
// response. A caller learns only its own challenges; the request counts
// against its rate as any request does.
func (a *Authorizer) ChallengeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, err := a.challenge(r)
		if err != nil {
			var ae *tunnel.AccessError
			if !errors.As(err, &ae) {
				ae = &tunnel.AccessError{Code: http.StatusInternalServerError, Message: "access: " + err.Error()}
			}
			if ae.RetryAfter > 0 {
				httpx.RetryAfter(w, ae.RetryAfter)
			}
			httpx.Refuse(w, r, ae.Code, "", ae.Message)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		if claims == "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"claims": claims})
	})
}

func (a *Authorizer) challenge(r *http.Request) (string, error) {
	if r.Method != http.MethodGet {
		return "", &tunnel.AccessError{Code: http.StatusMethodNotAllowed, Reason: "method", Message: "access: ask for a challenge with GET"}
	}
	tok, err := a.verify(r)
	if err != nil {
		return "", err
	}
	cluster := r.PathValue("cluster")
	p := a.policy.Load()
	lim := p.limits
	if c := p.clusters[cluster]; c != nil {
		lim = c.limits
	}
	release, err := a.admit(listKey, tok.Caller(), lim)
	if err != nil {
		return "", err
	}
	release()
	return a.challenges.take(callerKey{cluster, tok.Caller()}, time.Now()), nil
}
