package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The sign-in endpoints, shaped like Entra ID's v2 endpoints:
//
//	GET  /{tenant}/oauth2/v2.0/authorize    authorization code with PKCE (see [Issuer.SetBrowserUser])
//	POST /{tenant}/oauth2/v2.0/devicecode   device authorization (RFC 8628)
//	POST /{tenant}/oauth2/v2.0/token        authorization_code, device_code, client_credentials and refresh_token grants
//	GET  /github/token?audience=…           a GitHub Actions OIDC token endpoint (see [Issuer.GitHubActions])
//	GET  /metadata/identity/oauth2/token    Azure's instance metadata service for managed identities (see [Issuer.AddManagedIdentity])
//	GET  /msi/token                         an App Service identity endpoint (IDENTITY_ENDPOINT) for the same identities
//	GET  /arc/token                         an Azure Arc agent's identity endpoint, with its key-file challenge
//
// Access tokens it issues are Entra v2 tokens for the tenant, with aud the
// resource of the requested scope ("api://app/.default" → "api://app"),
// signed with the default key, so a verifier configured for the tenant
// accepts them. Errors are Entra's: the error codes RFC 6749 and 8628
// define, with AADSTS numbers in error_description and error_codes.
//
// A claims challenge (the claims parameter asking for authentication
// contexts, {"access_token":{"acrs":{"essential":true,"value":"c1"}}})
// sent to the authorize or device code endpoint is met: the person signs
// in again and the token carries "acrs":["c1"]. Sent with a refresh
// token whose sign-in did not meet it, it is answered
// interaction_required, as Entra asks for the person to sign in again.

// App is an application registered in one tenant of the stand-in.
type App struct {
	ClientID string
	Tenant   string
	// Public lets the app sign users in with the device code flow and,
	// to RedirectURIs, the authorization code flow.
	Public bool
	// RedirectURIs the authorize endpoint redirects to; a loopback one
	// (http://localhost) matches any port, as Entra's do.
	RedirectURIs []string
	// Secret, Certificate and Federated are the app's credentials for the
	// client credentials grant; any one of them signs it in.
	Secret      string
	Certificate *x509.Certificate
	Federated   []FederatedCredential
	// ObjectID is the service principal's object ID, the oid of app-only
	// tokens.
	ObjectID string
}

// FederatedCredential trusts tokens from another issuer as the app's
// credential (workload identity federation): a JWT signed by one of
// Issuer's published keys, with iss Issuer.URL, this sub and this aud
// (default "api://AzureADTokenExchange").
type FederatedCredential struct {
	Issuer   *Issuer
	Subject  string
	Audience string
}

// DefaultFederatedAudience is the audience Entra expects in federated
// credentials.
const DefaultFederatedAudience = "api://AzureADTokenExchange"

// DeviceLogin is a device code sign-in waiting for its user.
type DeviceLogin struct {
	UserCode string
	ClientID string
	Tenant   string
	Scope    string
	// Claims is the request's claims parameter (a claims challenge),
	// which the approving person meets.
	Claims string

	deviceCode string
	expires    time.Time
	decided    bool
	user       *EntraClaims // nil until approved; set with decided: approved
	slowDowns  int          // polls still to answer slow_down
}

// SignInOptions shape the sign-in endpoints' behaviour; zero fields keep
// the defaults.
type SignInOptions struct {
	// TokenLifetime of access tokens; default 1 hour.
	TokenLifetime time.Duration
	// DeviceCodeLifetime: how long a device code can be redeemed; default 15 minutes.
	DeviceCodeLifetime time.Duration
	// DeviceInterval is the polling interval the device code response asks
	// for, in whole seconds; default 1 second (Entra says 5).
	DeviceInterval time.Duration
	// SlowDown makes the first n polls of each device code answer
	// slow_down, as Entra does to a client that polls too fast.
	SlowDown int
}

// AddApp registers an application.
func (is *Issuer) AddApp(app App) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.apps == nil {
		is.apps = map[string]App{}
	}
	is.apps[app.ClientID] = app
}

// SetSignInOptions replaces the sign-in endpoints' options.
func (is *Issuer) SetSignInOptions(o SignInOptions) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.signIn = o
}

// AuthorityHost is what clients take as the Entra authority host
// (https://login.microsoftonline.com/ for the public cloud).
func (is *Issuer) AuthorityHost() string { return is.URL + "/" }

// NextDeviceLogin waits for a device code sign-in that nobody has approved
// or denied yet, and returns it.
func (is *Issuer) NextDeviceLogin(ctx context.Context) (*DeviceLogin, error) {
	for {
		is.mu.Lock()
		for _, d := range is.devices {
			if !d.decided && !d.seen {
				d.seen = true
				l := d.DeviceLogin
				is.mu.Unlock()
				return &l, nil
			}
		}
		wake := is.deviceWake
		is.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("oidctest: no device login: %w", ctx.Err())
		case <-wake:
		}
	}
}

// ApproveDevice signs user in on the device code userCode; Tenant,
// Audience and AppID are filled from the sign-in.
func (is *Issuer) ApproveDevice(userCode string, user EntraClaims) error {
	return is.decideDevice(userCode, &user)
}

// DenyDevice declines the device code sign-in userCode, as a user who
// answers "no" on the sign-in page.
func (is *Issuer) DenyDevice(userCode string) error { return is.decideDevice(userCode, nil) }

func (is *Issuer) decideDevice(userCode string, user *EntraClaims) error {
	is.mu.Lock()
	defer is.mu.Unlock()
	for _, d := range is.devices {
		if d.UserCode == userCode {
			if user != nil {
				u := *user
				u.Extra = withAuthContexts(u.Extra, d.Claims)
				user = &u
			}
			d.decided, d.user = true, user
			return nil
		}
	}
	return fmt.Errorf("oidctest: no device login with user code %q", userCode)
}

// TokenRequests is the number of token endpoint requests answered with a
// token so far, by grant type ("device_code", "client_credentials",
// "refresh_token").
func (is *Issuer) TokenRequests(grant string) int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.grants[grant]
}

// RevokeRefreshTokens makes every refresh token issued so far invalid, as
// a password change or an admin's revocation does.
func (is *Issuer) RevokeRefreshTokens() {
	is.mu.Lock()
	defer is.mu.Unlock()
	clear(is.refresh)
}

// GitHubActions returns what GitHub Actions puts in a job's environment
// for its OIDC token (ACTIONS_ID_TOKEN_REQUEST_URL and
// ACTIONS_ID_TOKEN_REQUEST_TOKEN): the endpoint answers a GET bearing
// requestToken, with an audience parameter, with a JWT for subject signed
// by this issuer (iss is [Issuer.URL]).
func (is *Issuer) GitHubActions(subject string) (requestURL, requestToken string) {
	requestToken = randomString(16)
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.github == nil {
		is.github = map[string]string{}
	}
	is.github[requestToken] = subject
	return is.URL + "/github/token?api-version=2.0", requestToken
}

type deviceState struct {
	DeviceLogin
	seen bool
}

func (is *Issuer) signInRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{tenant}/oauth2/v2.0/authorize", is.serveAuthorize)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/devicecode", is.serveDeviceCode)
	mux.HandleFunc("GET /metadata/identity/oauth2/token", is.serveIMDS)
	mux.HandleFunc("GET /msi/token", is.serveAppService)
	mux.HandleFunc("GET /arc/token", is.serveArc)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", is.serveToken)
	mux.HandleFunc("GET /github/token", is.serveGitHubToken)
}

func (is *Issuer) options() SignInOptions {
	o := is.signIn
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = time.Hour
	}
	if o.DeviceCodeLifetime <= 0 {
		o.DeviceCodeLifetime = 15 * time.Minute
	}
	if o.DeviceInterval < time.Second {
		o.DeviceInterval = time.Second
	}
	return o
}

// oauthError is an Entra-shaped error response.
type oauthError struct {
	status int
	code   string // RFC 6749 / 8628 error
	aadsts int
	text   string
}

func (e *oauthError) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(map[string]any{
		"error":             e.code,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s", e.aadsts, e.text, randomString(8)),
		"error_codes":       []int{e.aadsts},
		"timestamp":         time.Now().UTC().Format("2006-01-02 15:04:05Z"),
	})
}

func badRequest(code string, aadsts int, format string, a ...any) *oauthError {
	return &oauthError{http.StatusBadRequest, code, aadsts, fmt.Sprintf(format, a...)}
}

// app looks up the client in the tenant of the request's path.
func (is *Issuer) app(r *http.Request) (App, *oauthError) {
	tenant, client := r.PathValue("tenant"), r.PostFormValue("client_id")
	is.mu.Lock()
	app, ok := is.apps[client]
	is.mu.Unlock()
	if client == "" {
		return App{}, badRequest("invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
	}
	if !ok || app.Tenant != tenant {
		return App{}, badRequest("unauthorized_client", 700016,
			"Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", client, tenant)
	}
	return app, nil
}

func (is *Issuer) serveDeviceCode(w http.ResponseWriter, r *http.Request) {
	app, oe := is.app(r)
	if oe == nil && !app.Public {
		oe = badRequest("invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
	}
	scope := r.PostFormValue("scope")
	if oe == nil && scope == "" {
		oe = badRequest("invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
	}
	if oe != nil {
		oe.write(w)
		return
	}
	is.mu.Lock()
	o := is.options()
	d := &deviceState{DeviceLogin: DeviceLogin{
		UserCode: strings.ToUpper(randomString(5)), ClientID: app.ClientID, Tenant: app.Tenant, Scope: scope, Claims: r.PostFormValue("claims"),
		deviceCode: randomString(24), expires: time.Now().Add(o.DeviceCodeLifetime), slowDowns: o.SlowDown,
	}}
	if is.devices == nil {
		is.devices = map[string]*deviceState{}
	}
	is.devices[d.deviceCode] = d
	close(is.deviceWake)
	is.deviceWake = make(chan struct{})
	is.mu.Unlock()
	writeJSON(w, map[string]any{
		"user_code":        d.UserCode,
		"device_code":      d.deviceCode,
		"verification_uri": is.URL + "/devicelogin",
		"expires_in":       int(o.DeviceCodeLifetime.Seconds()),
		"interval":         int(o.DeviceInterval.Seconds()),
		"message":          fmt.Sprintf("To sign in, use a web browser to open the page %s/devicelogin and enter the code %s to authenticate.", is.URL, d.UserCode),
	})
}

func (is *Issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	var (
		claims *EntraClaims
		scope  = r.PostFormValue("scope")
		grant  string
		oe     *oauthError
		app    App
	)
	switch r.PostFormValue("grant_type") {
	case "authorization_code":
		grant = "authorization_code"
		if app, oe = is.app(r); oe == nil {
			claims, scope, oe = is.redeemCode(r, app)
		}
	case "urn:ietf:params:oauth:grant-type:device_code":
		grant = "device_code"
		if app, oe = is.app(r); oe == nil {
			claims, scope, oe = is.redeemDevice(r.PostFormValue("device_code"), app)
		}
	case "client_credentials":
		grant = "client_credentials"
		if app, oe = is.app(r); oe == nil {
			oe = is.checkClientCredential(r, app)
		}
		if oe == nil {
			claims = &EntraClaims{OID: app.ObjectID, Subject: app.ObjectID, IDType: "app"}
		}
	case "refresh_token":
		grant = "refresh_token"
		if app, oe = is.app(r); oe == nil {
			claims, oe = is.redeemRefresh(r.PostFormValue("refresh_token"), app, scope, r.PostFormValue("claims"))
		}
	default:
		oe = badRequest("unsupported_grant_type", 70003, "The app requested an unsupported grant type '%s'.", r.PostFormValue("grant_type"))
	}
	resource, ok := strings.CutSuffix(scope, "/.default")
	if oe == nil && (!ok || resource == "") {
		oe = badRequest("invalid_scope", 1002012, "The provided value for scope %q is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scope)
	}
	var cnf map[string]any
	if oe == nil && r.PostFormValue("token_type") == "pop" {
		cnf, oe = popBinding(r.PostFormValue("req_cnf"))
	}
	if oe != nil {
		oe.write(w)
		return
	}
	if cnf != nil {
		c := *claims
		c.Extra = maps.Clone(c.Extra)
		if c.Extra == nil {
			c.Extra = map[string]any{}
		}
		c.Extra["cnf"] = cnf
		claims = &c
	}
	is.issue(w, grant, app, *claims, scope, resource)
}

func (is *Issuer) issue(w http.ResponseWriter, grant string, app App, c EntraClaims, scope, resource string) {
	is.mu.Lock()
	o := is.options()
	is.mu.Unlock()
	c.Tenant, c.Audience, c.AppID = app.Tenant, resource, app.ClientID
	c.IssuedAt, c.NotBefore, c.Expiry = time.Now(), time.Now(), time.Now().Add(o.TokenLifetime)
	// uti is Entra's unique token ID: two tokens issued in one second differ.
	c.Extra = maps.Clone(c.Extra)
	if c.Extra == nil {
		c.Extra = map[string]any{}
	}
	c.Extra["uti"] = randomString(22)
	access, err := is.EntraToken(c)
	if err != nil {
		(&oauthError{http.StatusInternalServerError, "server_error", 90000, err.Error()}).write(w)
		return
	}
	tokenType := "Bearer"
	if c.Extra["cnf"] != nil {
		tokenType = "pop"
	}
	resp := map[string]any{
		"token_type": tokenType, "access_token": access, "scope": scope,
		"expires_in": int(o.TokenLifetime.Seconds()), "ext_expires_in": int(o.TokenLifetime.Seconds()),
	}
	is.mu.Lock()
	if grant != "client_credentials" { // Entra gives app-only sign-ins no refresh token
		rt := randomString(32)
		if is.refresh == nil {
			is.refresh = map[string]refreshGrant{}
		}
		is.refresh[rt] = refreshGrant{client: app.ClientID, user: c}
		resp["refresh_token"] = rt
	}
	if is.grants == nil {
		is.grants = map[string]int{}
	}
	is.grants[grant]++
	is.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, resp)
}

type refreshGrant struct {
	client string
	user   EntraClaims
}

func (is *Issuer) redeemDevice(code string, app App) (*EntraClaims, string, *oauthError) {
	is.mu.Lock()
	defer is.mu.Unlock()
	d, ok := is.devices[code]
	switch {
	case !ok || d.ClientID != app.ClientID:
		return nil, "", badRequest("invalid_grant", 70000, "Provided value for the input parameter 'device_code' is not valid.")
	case time.Now().After(d.expires):
		delete(is.devices, code)
		return nil, "", badRequest("expired_token", 70020, "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.")
	case d.slowDowns > 0:
		d.slowDowns--
		return nil, "", badRequest("slow_down", 70023, "The client is polling too fast; slow down.")
	case !d.decided:
		return nil, "", badRequest("authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
	case d.user == nil:
		delete(is.devices, code)
		return nil, "", badRequest("authorization_declined", 70000, "The user declined the sign-in.")
	}
	delete(is.devices, code)
	return d.user, d.Scope, nil
}

func (is *Issuer) redeemRefresh(rt string, app App, scope, challenge string) (*EntraClaims, *oauthError) {
	if scope == "" {
		return nil, badRequest("invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	g, ok := is.refresh[rt]
	if !ok || g.client != app.ClientID {
		return nil, badRequest("invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity or was revoked.")
	}
	have, _ := g.user.Extra["acrs"].([]string)
	for _, want := range requestedAuthContexts(challenge) {
		if !slices.Contains(have, want) {
			return nil, &oauthError{http.StatusBadRequest, "interaction_required", 50076,
				"Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '" + scope + "'."}
		}
	}
	delete(is.refresh, rt) // Entra rotates refresh tokens; the old one is spent here
	return &g.user, nil
}

// checkClientCredential checks a confidential client's secret, certificate
// assertion or federated assertion.
func (is *Issuer) checkClientCredential(r *http.Request, app App) *oauthError {
	if secret := r.PostFormValue("client_secret"); secret != "" {
		if app.Secret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(app.Secret)) != 1 {
			return &oauthError{http.StatusUnauthorized, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '" + app.ClientID + "'."}
		}
		return nil
	}
	if r.PostFormValue("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || r.PostFormValue("client_assertion") == "" {
		return &oauthError{http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."}
	}
	tok, err := jwt.ParseSigned(r.PostFormValue("client_assertion"), []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256})
	if err != nil {
		return &oauthError{http.StatusUnauthorized, "invalid_client", 50027, "JWT token is invalid or malformed."}
	}
	if len(tok.Headers) == 1 && (tok.Headers[0].ExtraHeaders["x5t"] != nil || tok.Headers[0].ExtraHeaders["x5t#S256"] != nil) {
		return is.checkCertificateAssertion(r, app, tok)
	}
	return is.checkFederatedAssertion(app, tok)
}

func (is *Issuer) checkCertificateAssertion(r *http.Request, app App, tok *jwt.JSONWebToken) *oauthError {
	if app.Certificate == nil {
		return &oauthError{http.StatusUnauthorized, "invalid_client", 700027, "The certificate with identifier used to sign the client assertion is not registered on application."}
	}
	h := tok.Headers[0].ExtraHeaders
	sha1Sum, sha256Sum := sha1.Sum(app.Certificate.Raw), sha256.Sum256(app.Certificate.Raw)
	if h["x5t"] != base64.RawURLEncoding.EncodeToString(sha1Sum[:]) && h["x5t#S256"] != base64.RawURLEncoding.EncodeToString(sha256Sum[:]) {
		return &oauthError{http.StatusUnauthorized, "invalid_client", 700027, "The certificate with identifier used to sign the client assertion is not registered on application."}
	}
	var c jwt.Claims
	if err := tok.Claims(app.Certificate.PublicKey, &c); err != nil {
		return &oauthError{http.StatusUnauthorized, "invalid_client", 700027, "Client assertion failed signature validation."}
	}
	tokenURL := "https://" + r.Host + r.URL.Path
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: app.ClientID, Subject: app.ClientID, AnyAudience: jwt.Audience{tokenURL}, Time: time.Now()}, time.Minute); err != nil {
		return &oauthError{http.StatusUnauthorized, "invalid_client", 700024, "Client assertion is not within its valid time range, or its audience, issuer or subject is not this app: " + err.Error()}
	}
	if c.Expiry == nil {
		return &oauthError{http.StatusUnauthorized, "invalid_client", 700024, "Client assertion has no exp."}
	}
	return nil
}

func (is *Issuer) checkFederatedAssertion(app App, tok *jwt.JSONWebToken) *oauthError {
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return &oauthError{http.StatusUnauthorized, "invalid_client", 50027, "JWT token is invalid or malformed."}
	}
	for _, fc := range app.Federated {
		if fc.Issuer == nil || fc.Issuer.URL != c.Issuer || fc.Subject != c.Subject {
			continue
		}
		aud := cmpOr(fc.Audience, DefaultFederatedAudience)
		var verified jwt.Claims
		if err := fc.Issuer.verify(tok, &verified); err != nil {
			return &oauthError{http.StatusUnauthorized, "invalid_client", 700212, "The federated token's signature could not be verified with the issuer's keys."}
		}
		if err := verified.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{aud}, Time: time.Now()}, time.Minute); err != nil {
			return &oauthError{http.StatusUnauthorized, "invalid_client", 700024, "Client assertion is not within its valid time range or has the wrong audience (expected " + aud + "): " + err.Error()}
		}
		return nil
	}
	return &oauthError{http.StatusUnauthorized, "invalid_client", 70021,
		fmt.Sprintf("No matching federated identity record found for presented assertion. Assertion Issuer: '%s'. Assertion Subject: '%s'.", c.Issuer, c.Subject)}
}

// verify checks tok against the issuer's published keys.
func (is *Issuer) verify(tok *jwt.JSONWebToken, out any) error {
	for _, k := range is.Keys() {
		if k.published && (len(tok.Headers) == 1 && tok.Headers[0].KeyID == k.ID) {
			return tok.Claims(k.Private.Public(), out)
		}
	}
	return errors.New("oidctest: no published key signed the token")
}

func (is *Issuer) serveGitHubToken(w http.ResponseWriter, r *http.Request) {
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	is.mu.Lock()
	subject, ok := is.github[bearer]
	is.mu.Unlock()
	if !ok {
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
		return
	}
	aud := r.URL.Query().Get("audience")
	if aud == "" {
		aud = "https://github.com/clusterconnect"
	}
	now := time.Now()
	tok, err := is.Token(map[string]any{
		"iss": is.URL, "sub": subject, "aud": aud, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
		"jti": randomString(8),
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]string{"value": tok})
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// NewClientCertificate makes a self-signed RSA certificate for an app's
// certificate credential, and returns it with one PEM file's contents,
// certificate then private key, as `az ad sp create-for-rbac
// --create-cert` writes them.
func NewClientCertificate(name string) (*x509.Certificate, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("oidctest: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("oidctest: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("oidctest: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("oidctest: %w", err)
	}
	pemBytes := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	return cert, pemBytes, nil
}

// popBinding reads a PoP token request's req_cnf, base64url JSON naming
// the client's key by thumbprint ({"kid": "…"}), as the access token's
// cnf claim.
func popBinding(reqCnf string) (map[string]any, *oauthError) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(reqCnf, "="))
	var cnf struct {
		Kid string `json:"kid"`
	}
	if err != nil || json.Unmarshal(b, &cnf) != nil || cnf.Kid == "" {
		return nil, badRequest("invalid_request", 50027, "token_type=pop needs req_cnf: the base64url JSON {\"kid\": <the key's thumbprint>}.")
	}
	return map[string]any{"kid": cnf.Kid, "xms_ksl": "sw"}, nil
}
