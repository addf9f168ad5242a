package oidctest

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ManagedIdentity is an Azure managed identity of the machine the
// stand-in plays: its tokens come from the instance metadata service
// (IMDS) or an App Service identity endpoint, without a credential.
type ManagedIdentity struct {
	ClientID, ObjectID, Tenant string
	// SystemAssigned is the machine's own identity, given to a request
	// that names none.
	SystemAssigned bool
}

// AddManagedIdentity assigns an identity to the machine.
func (is *Issuer) AddManagedIdentity(id ManagedIdentity) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.identities == nil {
		is.identities = map[string]ManagedIdentity{}
	}
	is.identities[id.ClientID] = id
}

// IMDSURL is the stand-in's IMDS token endpoint, in place of
// http://169.254.169.254/metadata/identity/oauth2/token.
func (is *Issuer) IMDSURL() string { return is.URL + "/metadata/identity/oauth2/token" }

// IdentityEndpoint is the stand-in's App Service identity endpoint
// (IDENTITY_ENDPOINT), and IdentityHeader the secret it takes
// (IDENTITY_HEADER, sent as X-IDENTITY-HEADER).
func (is *Issuer) IdentityEndpoint() string { return is.URL + "/msi/token" }

// IdentityHeader is the secret IdentityEndpoint takes.
const IdentityHeader = "oidctest-identity-header"

// serveIMDS answers as IMDS does (api-version 2018-02-01): the Metadata
// header required (a browser cannot send it, so a page cannot fetch a
// token), the identity named by client_id, object_id or msi_res_id or
// else the system-assigned one; the times as strings of seconds.
func (is *Issuer) serveIMDS(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata") != "true" {
		imdsError(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
		return
	}
	is.serveIdentity(w, r)
}

// serveAppService answers as App Service's identity endpoint does
// (api-version 2019-08-01): the X-IDENTITY-HEADER secret required.
func (is *Issuer) serveAppService(w http.ResponseWriter, r *http.Request) {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-IDENTITY-HEADER")), []byte(IdentityHeader)) != 1 {
		imdsError(w, http.StatusUnauthorized, "invalid_request", "The X-IDENTITY-HEADER header is missing or wrong")
		return
	}
	is.serveIdentity(w, r)
}

// FailIdentity makes the next n requests to the identity endpoints
// answer status, as IMDS does while it starts (410) or is busy (429,
// 5xx).
func (is *Issuer) FailIdentity(status, n int) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.identityFail, is.identityFails = status, n
}

// IdentityRequests is how many requests the identity endpoints answered.
func (is *Issuer) IdentityRequests() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.identityRequests
}

// ArcEndpoint is the stand-in's Azure Arc agent identity endpoint
// (IDENTITY_ENDPOINT beside IMDS_ENDPOINT). Its challenges name key files
// in dir, which SetArcKeyDir sets.
func (is *Issuer) ArcEndpoint() string { return is.URL + "/arc/token" }

// SetArcKeyDir sets where the Arc endpoint writes the key files its
// challenges name (the agent's /var/opt/azcmagent/tokens).
func (is *Issuer) SetArcKeyDir(dir string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.arcKeyDir = dir
}

// serveArc answers as the Arc agent does (api-version 2019-11-01): a
// request without a key is answered 401 with a challenge naming a new key
// file (Basic realm=<path>); one with Authorization: Basic <that key>
// gets the machine's token.
func (is *Issuer) serveArc(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata") != "true" {
		imdsError(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
		return
	}
	is.mu.Lock()
	dir, want := is.arcKeyDir, is.arcKey
	is.mu.Unlock()
	if key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Basic "); ok && want != "" && subtle.ConstantTimeCompare([]byte(key), []byte(want)) == 1 {
		is.serveIdentity(w, r)
		return
	}
	key := randomString(32)
	path := filepath.Join(dir, randomString(12)+".key")
	if err := os.WriteFile(path, []byte(key), 0o600); err != nil {
		imdsError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	is.mu.Lock()
	is.arcKey = key
	is.mu.Unlock()
	w.Header().Set("Www-Authenticate", "Basic realm="+path)
	imdsError(w, http.StatusUnauthorized, "unauthorized", "present the key in the file the challenge names")
}

func (is *Issuer) serveIdentity(w http.ResponseWriter, r *http.Request) {
	is.mu.Lock()
	is.identityRequests++
	fail := is.identityFails > 0
	if fail {
		is.identityFails--
	}
	status := is.identityFail
	is.mu.Unlock()
	if fail {
		imdsError(w, status, "temporarily_unavailable", "The identity endpoint is not ready; retry")
		return
	}
	q := r.URL.Query()
	if q.Get("api-version") == "" {
		imdsError(w, http.StatusBadRequest, "invalid_request", "api-version is required")
		return
	}
	resource := q.Get("resource")
	if resource == "" {
		imdsError(w, http.StatusBadRequest, "invalid_request", "resource is required")
		return
	}
	is.mu.Lock()
	var id ManagedIdentity
	found := false
	for _, i := range is.identities {
		switch {
		case q.Get("client_id") != "" && i.ClientID == q.Get("client_id"),
			q.Get("object_id") != "" && i.ObjectID == q.Get("object_id"),
			q.Get("client_id") == "" && q.Get("object_id") == "" && q.Get("msi_res_id") == "" && i.SystemAssigned:
			id, found = i, true
		}
	}
	o := is.options()
	is.mu.Unlock()
	if !found {
		imdsError(w, http.StatusBadRequest, "invalid_request", "Identity not found")
		return
	}
	now := time.Now()
	access, err := is.EntraToken(EntraClaims{Tenant: id.Tenant, Audience: resource, OID: id.ObjectID, Subject: id.ObjectID,
		AppID: id.ClientID, IDType: "app", IssuedAt: now, NotBefore: now, Expiry: now.Add(o.TokenLifetime)})
	if err != nil {
		imdsError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	secs := strconv.Itoa(int(o.TokenLifetime.Seconds()))
	writeJSON(w, map[string]string{
		"access_token": access, "client_id": id.ClientID, "resource": resource, "token_type": "Bearer",
		"expires_in": secs, "ext_expires_in": secs, "expires_on": strconv.FormatInt(now.Add(o.TokenLifetime).Unix(), 10),
		"not_before": strconv.FormatInt(now.Unix(), 10),
	})
}

func imdsError(w http.ResponseWriter, status int, code, text string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": text})
}
