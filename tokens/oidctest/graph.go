package oidctest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// A Microsoft Graph stand-in, for resolving Entra ID's groups overage:
//
//	POST /graph/v1.0/directoryObjects/{id}/getMemberObjects   the object's groups, paged
//	GET  /graph/v1.0/pages/{cursor}                           the next page (@odata.nextLink)
//
// Callers authenticate with an app-only access token from this issuer for
// GraphResource (any tenant). It can page, throttle (429 with
// Retry-After) and fail on demand.

// GraphResource is Microsoft Graph's resource ID, the audience of tokens
// for it (scope https://graph.microsoft.com/.default).
const GraphResource = "https://graph.microsoft.com"

// GraphURL is the Graph stand-in's base URL, in place of
// https://graph.microsoft.com.
func (is *Issuer) GraphURL() string { return is.URL + "/graph" }

// SetMemberGroups sets the groups Graph returns for the object ID.
func (is *Issuer) SetMemberGroups(objectID string, groups []string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.graph.groups == nil {
		is.graph.groups = map[string][]string{}
	}
	is.graph.groups[objectID] = groups
}

// SetGraphPageSize makes Graph answer at most n groups a page (0: all).
func (is *Issuer) SetGraphPageSize(n int) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.graph.pageSize = n
}

// ThrottleGraph makes the next n Graph requests answer 429 with
// Retry-After: retryAfter seconds, as Graph does under load.
func (is *Issuer) ThrottleGraph(n, retryAfter int) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.graph.throttle, is.graph.retryAfter = n, retryAfter
}

// FailGraph makes Graph answer every request with status (0 restores it).
func (is *Issuer) FailGraph(status int) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.graph.fail = status
}

// GraphRequests is the number of Graph requests served, answered or not.
func (is *Issuer) GraphRequests() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.graph.requests
}

type graphState struct {
	groups     map[string][]string
	pageSize   int
	throttle   int
	retryAfter int
	fail       int
	requests   int
	pages      map[string][]string // cursor → the groups left
}

func (is *Issuer) graphRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /graph/v1.0/directoryObjects/{id}/getMemberObjects", is.serveMemberObjects)
	mux.HandleFunc("GET /graph/v1.0/pages/{cursor}", is.serveGraphPage)
}

// graphGate answers the request itself (auth, throttling, failure) and
// reports whether it did.
func (is *Issuer) graphGate(w http.ResponseWriter, r *http.Request) bool {
	is.mu.Lock()
	is.graph.requests++
	fail, throttle, retry := is.graph.fail, is.graph.throttle, is.graph.retryAfter
	if throttle > 0 {
		is.graph.throttle--
	}
	is.mu.Unlock()
	if !is.graphAuthorized(r) {
		graphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token validation failure.")
		return true
	}
	if fail != 0 {
		graphError(w, fail, "serviceNotAvailable", "The service is unavailable.")
		return true
	}
	if throttle > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retry))
		graphError(w, http.StatusTooManyRequests, "TooManyRequests", "Too many requests.")
		return true
	}
	return false
}

// graphAuthorized checks for an app-only token of this issuer for Graph.
func (is *Issuer) graphAuthorized(r *http.Request) bool {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256})
	if err != nil {
		return false
	}
	var c struct {
		jwt.Claims
		IDType string `json:"idtyp"`
	}
	if err := is.verify(tok, &c); err != nil {
		return false
	}
	return c.IDType == "app" && c.Audience.Contains(GraphResource) && c.ValidateWithLeeway(jwt.Expected{}, 0) == nil
}

func (is *Issuer) serveMemberObjects(w http.ResponseWriter, r *http.Request) {
	if is.graphGate(w, r) {
		return
	}
	is.mu.Lock()
	groups, ok := is.graph.groups[r.PathValue("id")]
	is.mu.Unlock()
	if !ok {
		graphError(w, http.StatusNotFound, "Request_ResourceNotFound", "Resource '"+r.PathValue("id")+"' does not exist.")
		return
	}
	is.writeGroupsPage(w, groups)
}

func (is *Issuer) serveGraphPage(w http.ResponseWriter, r *http.Request) {
	if is.graphGate(w, r) {
		return
	}
	is.mu.Lock()
	groups, ok := is.graph.pages[r.PathValue("cursor")]
	is.mu.Unlock()
	if !ok {
		graphError(w, http.StatusBadRequest, "Directory_ExpiredPageToken", "The specified page token value has expired.")
		return
	}
	is.writeGroupsPage(w, groups)
}

func (is *Issuer) writeGroupsPage(w http.ResponseWriter, groups []string) {
	resp := map[string]any{"@odata.context": GraphResource + "/v1.0/$metadata#Collection(Edm.String)"}
	is.mu.Lock()
	n := is.graph.pageSize
	if n > 0 && len(groups) > n {
		cursor := randomString(16)
		if is.graph.pages == nil {
			is.graph.pages = map[string][]string{}
		}
		is.graph.pages[cursor] = groups[n:]
		groups = groups[:n]
		resp["@odata.nextLink"] = is.GraphURL() + "/v1.0/pages/" + cursor
	}
	is.mu.Unlock()
	resp["value"] = append([]string{}, groups...)
	writeJSON(w, resp)
}

func graphError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": message}})
}
