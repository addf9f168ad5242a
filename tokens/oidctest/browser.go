package oidctest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// The authorization code flow, as Entra's v2 endpoints run it for a
// public client on a person's machine:
//
//	GET  /{tenant}/oauth2/v2.0/authorize?client_id&response_type=code&redirect_uri&scope&state&code_challenge&code_challenge_method=S256[&claims]
//	POST /{tenant}/oauth2/v2.0/token  grant_type=authorization_code, code, redirect_uri, code_verifier
//
// The stand-in plays the person at the browser: the authorize endpoint
// signs in whom SetBrowserUser named (or declines) and redirects to the
// redirect URI with a code and the state, as Entra does once the person
// has signed in. A client drives it with an HTTP client that follows the
// redirect to its loopback listener.

// BrowserLogin is an authorization request the stand-in answered.
type BrowserLogin struct {
	ClientID, Tenant, Scope, RedirectURI string
	// Claims is the request's claims parameter (a claims challenge), as
	// sent; "" if none.
	Claims string
}

// authCode is an issued authorization code, redeemable once.
type authCode struct {
	BrowserLogin
	challenge string
	user      EntraClaims
	expires   time.Time
}

// SetBrowserUser names the person who signs in at the authorize
// endpoint; nil makes them decline (the redirect carries
// error=access_denied). Until it is called, authorization requests get an
// error page, as a browser nobody uses would.
func (is *Issuer) SetBrowserUser(user *EntraClaims) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.browserSet = true
	is.browserUser = user
}

// BrowserLogins returns the authorization requests answered so far.
func (is *Issuer) BrowserLogins() []BrowserLogin {
	is.mu.Lock()
	defer is.mu.Unlock()
	return slices.Clone(is.browserLogins)
}

// loopbackRedirect reports whether uri is one of the app's redirect URIs,
// the port aside for a loopback one (RFC 8252 section 7.3, as Entra
// matches http://localhost).
func loopbackRedirect(app App, uri string) bool {
	u, err := url.Parse(uri)
	if err != nil || u.Fragment != "" {
		return false
	}
	for _, r := range app.RedirectURIs {
		ru, err := url.Parse(r)
		if err != nil {
			continue
		}
		if u.Scheme == ru.Scheme && u.Hostname() == ru.Hostname() && cmpOr(u.Path, "/") == cmpOr(ru.Path, "/") &&
			(u.Port() == ru.Port() || (u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
			return true
		}
	}
	return false
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// errorPage is what Entra shows instead of redirecting when it cannot
// trust the redirect URI or the client.
func errorPage(w http.ResponseWriter, aadsts int, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, "<html><body><h1>Sorry, but we're having trouble signing you in.</h1><p>AADSTS%d: %s</p></body></html>\n", aadsts, html.EscapeString(text))
}

func (is *Issuer) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	tenant, client, redirect := r.PathValue("tenant"), q.Get("client_id"), q.Get("redirect_uri")
	is.mu.Lock()
	app, ok := is.apps[client]
	is.mu.Unlock()
	switch {
	case !ok || app.Tenant != tenant:
		errorPage(w, 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", client, tenant))
		return
	case !loopbackRedirect(app, redirect):
		errorPage(w, 50011, fmt.Sprintf("The redirect URI '%s' specified in the request does not match the redirect URIs configured for the application '%s'.", redirect, client))
		return
	}
	// From here on Entra answers through the redirect.
	back := func(v url.Values) {
		if s := q.Get("state"); s != "" {
			v.Set("state", s)
		}
		u, _ := url.Parse(redirect)
		u.RawQuery = v.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	fail := func(code string, aadsts int, text string) {
		back(url.Values{"error": {code}, "error_description": {fmt.Sprintf("AADSTS%d: %s", aadsts, text)}})
	}
	switch {
	case !app.Public:
		fail("invalid_client", 7000218, "The app is not a public client.")
		return
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", 700054, "response_type '"+q.Get("response_type")+"' is not enabled for the application.")
		return
	case q.Get("scope") == "":
		fail("invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
		return
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		fail("invalid_request", 9002325, "Proof Key for Code Exchange (S256) is required for cross-origin authorization code redemption.")
		return
	}
	if c := q.Get("claims"); c != "" && !json.Valid([]byte(c)) {
		fail("invalid_request", 90014, "The claims parameter is not valid JSON.")
		return
	}
	login := BrowserLogin{ClientID: client, Tenant: tenant, Scope: q.Get("scope"), RedirectURI: redirect, Claims: q.Get("claims")}
	is.mu.Lock()
	set, user := is.browserSet, is.browserUser
	is.browserLogins = append(is.browserLogins, login)
	is.mu.Unlock()
	switch {
	case !set:
		errorPage(w, 50058, "A silent sign-in request was sent but no user is signed in.")
		return
	case user == nil:
		fail("access_denied", 65004, "User declined to consent to access the app.")
		return
	}
	code := randomString(32)
	u := *user
	u.Extra = withAuthContexts(u.Extra, login.Claims)
	is.mu.Lock()
	if is.codes == nil {
		is.codes = map[string]*authCode{}
	}
	is.codes[code] = &authCode{BrowserLogin: login, challenge: q.Get("code_challenge"), user: u, expires: time.Now().Add(10 * time.Minute)}
	is.mu.Unlock()
	back(url.Values{"code": {code}})
}

// redeemCode checks an authorization code grant: the code is the app's,
// unspent and fresh, sent back to the same redirect URI, with the verifier
// of its challenge.
func (is *Issuer) redeemCode(r *http.Request, app App) (*EntraClaims, string, *oauthError) {
	is.mu.Lock()
	defer is.mu.Unlock()
	c, ok := is.codes[r.PostFormValue("code")]
	delete(is.codes, r.PostFormValue("code")) // spent, whatever happens next
	sum := sha256.Sum256([]byte(r.PostFormValue("code_verifier")))
	switch {
	case !ok || c.ClientID != app.ClientID || time.Now().After(c.expires):
		return nil, "", badRequest("invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity or was revoked.")
	case r.PostFormValue("redirect_uri") != c.RedirectURI:
		return nil, "", badRequest("invalid_grant", 70002, "The redirect URI does not match the one the authorization code was issued to.")
	case subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(c.challenge)) != 1:
		return nil, "", badRequest("invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.")
	}
	return &c.user, c.Scope, nil
}

// withAuthContexts adds to extra the acrs claim a claims challenge asks
// for ({"access_token":{"acrs":{"essential":true,"value":"c1"}}}, or
// "values"): the person met the authentication context while signing in.
func withAuthContexts(extra map[string]any, claims string) map[string]any {
	acrs := requestedAuthContexts(claims)
	if len(acrs) == 0 {
		return extra
	}
	out := map[string]any{}
	for k, v := range extra {
		out[k] = v
	}
	have, _ := out["acrs"].([]string)
	for _, a := range acrs {
		if !slices.Contains(have, a) {
			have = append(have, a)
		}
	}
	out["acrs"] = have
	return out
}

// requestedAuthContexts reads the authentication contexts a claims
// parameter asks for.
func requestedAuthContexts(claims string) []string {
	var req struct {
		AccessToken struct {
			Acrs struct {
				Value  string   `json:"value"`
				Values []string `json:"values"`
			} `json:"acrs"`
		} `json:"access_token"`
	}
	if claims == "" || json.Unmarshal([]byte(claims), &req) != nil {
		return nil
	}
	out := slices.Clone(req.AccessToken.Acrs.Values)
	if v := req.AccessToken.Acrs.Value; v != "" {
		out = append(out, v)
	}
	return out
}
