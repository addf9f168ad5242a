package access

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// ClusterList is the answer of ClustersHandler: the clusters a caller may
// reach, by ID.
type ClusterList struct {
	Clusters []ClusterStatus `json:"clusters"`
}

// ClusterStatus is one cluster a caller may reach, and whether an agent
// of it is connected now (to this relay, or to another replica of its
// fleet).
type ClusterStatus struct {
	ID        string `json:"id"`
	Connected bool   `json:"connected"`
}

// ClustersHandler answers GET with the ClusterList of the caller's
// bearer token: each cluster of the policy whose rule lets the token in
// (as AuthorizeClient would, Graph asked at most once for a token whose
// groups overflowed it), sorted by ID, with connected(ID). A caller
// without a token the relay verifies gets the refusal AuthorizeClient
// gives, and learns nothing of any cluster; a verified caller learns
// nothing of the clusters it may not reach. Tokens the relay cannot verify
// are refused even where a cluster passes them through: the list is for
// callers the relay knows. Each answer counts against the caller's
// request rate under the policy's limits (not a cluster's: the count is
// its own).
func (a *Authorizer) ClustersHandler(connected func(clusterID string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		list, err := a.list(r, connected)
		if err != nil {
			var ae *tunnel.AccessError
			if !errors.As(err, &ae) {
				a.log.Warn("cannot list a caller's clusters", "err", err)
				ae = &tunnel.AccessError{Code: http.StatusInternalServerError, Message: "access: the clusters could not be listed; retry"}
			}
			if ae.RetryAfter > 0 {
				httpx.RetryAfter(w, ae.RetryAfter)
			}
			httpx.Refuse(w, r, ae.Code, "", ae.Message)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(list)
	})
}

// listKey is the limits' key for listing: no cluster has an empty ID.
const listKey = ""

func (a *Authorizer) list(r *http.Request, connected func(string) bool) (*ClusterList, error) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return nil, &tunnel.AccessError{Code: http.StatusMethodNotAllowed, Reason: "method", Message: "access: list clusters with GET"}
	}
	tok, err := a.verify(r)
	if err != nil {
		return nil, err
	}
	p := a.policy.Load()
	release, err := a.admit(listKey, tok.Caller(), p.limits)
	if err != nil {
		return nil, err
	}
	release()
	ids := make([]string, 0, len(p.clusters))
	for id := range p.clusters {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	list := &ClusterList{Clusters: []ClusterStatus{}}
	var groups []string
	resolved := false
	for _, id := range ids {
		c := p.clusters[id]
		why := c.refuse(tok, groups)
		if why == whyOverage && a.groups != nil && !resolved {
			resolved = true
			if groups, err = a.groups.ResolveGroups(r.Context(), tok); err != nil {
				a.log.Warn("cannot resolve a caller's groups (overage)", "subject", tok.Subject, "err", err)
			}
			why = c.refuse(tok, groups)
		}
		if why == "" {
			list.Clusters = append(list.Clusters, ClusterStatus{ID: id, Connected: connected != nil && connected(id)})
		}
	}
	return list, nil
}

// verify checks r's bearer token, answering as AuthorizeClient does a
// token that is missing, malformed or refused, and 401 for one of an
// issuer the relay does not trust.
func (a *Authorizer) verify(r *http.Request) (*tokens.Token, error) {
	raw, err := httpx.BearerToken(r.Header)
	if err != nil {
		return nil, bearerError(err)
	}
	tok, err := a.v.Verify(r.Context(), raw)
	if err != nil {
		return nil, a.tokenError(err)
	}
	return tok, nil
}
