package signin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Authority hosts of the Microsoft clouds, as AZURE_AUTHORITY_HOST names
// them.
const (
	AzurePublicCloud       = "https://login.microsoftonline.com/"
	AzureChinaCloud        = "https://login.chinacloudapi.cn/"
	AzureUSGovernmentCloud = "https://login.microsoftonline.us/"
)

// DefaultTimeout bounds one request to the token endpoint when
// Config.HTTPClient is nil.
const DefaultTimeout = 30 * time.Second

// Config names the app that signs in and where: Entra ID's v2.0 endpoints
// for one tenant of one cloud.
type Config struct {
	// AuthorityHost is the cloud's sign-in host, AzurePublicCloud when
	// empty; a stand-in's URL in tests.
	AuthorityHost string
	// TenantID is the directory (tenant) ID or domain. Required.
	TenantID string
	// ClientID is the application (client) ID that signs in. Required.
	ClientID string
	// Scopes to ask for, usually one: [ServerScope] of the server app that
	// the cluster's tokens are for. Required.
	Scopes []string
	// HTTPClient makes the requests; nil means a client with
	// DefaultTimeout and the system's roots (and HTTPS_PROXY).
	HTTPClient *http.Client
	// PoPKey, if set, asks for access tokens bound to this key
	// (proof of possession); wrap the source in PoPSource.
	PoPKey *PoPKey
}

// ServerScope is the scope that asks for a token for serverID, an
// application ID URI ("api://clusterconnect-server") or client ID: all of
// the server app's permissions, "<serverID>/.default". A serverID that
// already names a scope is returned as it is.
func ServerScope(serverID string) string {
	if strings.HasSuffix(serverID, "/.default") {
		return serverID
	}
	return strings.TrimSuffix(serverID, "/") + "/.default"
}

func (c *Config) check() error {
	var missing []string
	if c.TenantID == "" {
		missing = append(missing, "a tenant ID")
	}
	if c.ClientID == "" {
		missing = append(missing, "a client ID")
	}
	if len(c.Scopes) == 0 {
		missing = append(missing, "a scope (the server app's ID)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("signin: sign-in needs %s", strings.Join(missing, ", "))
	}
	if _, err := url.Parse(c.authority()); err != nil {
		return fmt.Errorf("signin: authority host: %w", err)
	}
	return nil
}

func (c *Config) authority() string {
	host := c.AuthorityHost
	if host == "" {
		host = AzurePublicCloud
	}
	return strings.TrimSuffix(host, "/") + "/" + url.PathEscape(c.TenantID)
}

// Endpoint is the tenant's OAuth 2.0 endpoints; the client ID is always
// sent in the body, as public clients must.
func (c *Config) Endpoint() oauth2.Endpoint {
	base := c.authority() + "/oauth2/v2.0/"
	return oauth2.Endpoint{
		AuthURL:       base + "authorize",
		TokenURL:      base + "token",
		DeviceAuthURL: base + "devicecode",
		AuthStyle:     oauth2.AuthStyleInParams,
	}
}

// CacheKey identifies tokens this config signs in for, in a token cache:
// the authority, the client and the scopes.
// A PoP-bound token is kept apart, by its key.
func (c *Config) CacheKey() string {
	key := strings.Join([]string{c.authority(), c.ClientID, strings.Join(c.Scopes, " ")}, "|")
	if c.PoPKey != nil {
		key += "|pop:" + c.PoPKey.Thumbprint()
	}
	return key
}

func (c *Config) context(ctx context.Context) context.Context {
	client := c.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: DefaultTimeout}
	}
	return context.WithValue(ctx, oauth2.HTTPClient, client)
}

// popOptions are the token request's parameters that bind it to PoPKey,
// for the flows that redeem a code through x/oauth2; none without a key.
func (c *Config) popOptions() []oauth2.AuthCodeOption {
	if c.PoPKey == nil {
		return nil
	}
	var opts []oauth2.AuthCodeOption
	for k, v := range c.PoPKey.params() {
		opts = append(opts, oauth2.SetAuthURLParam(k, v[0]))
	}
	return opts
}

// tokenRequest asks the token endpoint for a token with grant (and its
// parameters); clientcredentials is the x/oauth2 call that sends a grant
// with parameters of our choosing.
func (c *Config) tokenRequest(ctx context.Context, secret string, params url.Values) (*oauth2.Token, error) {
	if c.PoPKey != nil {
		if params == nil {
			params = url.Values{}
		}
		for k, v := range c.PoPKey.params() {
			params[k] = v
		}
	}
	cc := clientcredentials.Config{
		ClientID: c.ClientID, ClientSecret: secret, TokenURL: c.Endpoint().TokenURL,
		Scopes: c.Scopes, EndpointParams: params, AuthStyle: oauth2.AuthStyleInParams,
	}
	return cc.Token(c.context(ctx))
}

// refresh redeems last's refresh token, sending the scopes as Entra's v2.0
// endpoint wants (x/oauth2's own refresh sends none). ok is false when
// there is no refresh token or the server refused it, so that the caller
// signs in again; other errors are returned.
//
// With claims (a claims challenge), the refresh asks for them: Entra
// grants them when the sign-in behind the refresh token met them, and
// otherwise answers interaction_required, which also makes ok false.
func (c *Config) refresh(ctx context.Context, last *oauth2.Token, claims string) (tok *oauth2.Token, ok bool, err error) {
	if last == nil || last.RefreshToken == "" {
		return nil, false, nil
	}
	params := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {last.RefreshToken}}
	if claims != "" {
		params.Set("claims", claims)
	}
	tok, err = c.tokenRequest(ctx, "", params)
	if err == nil {
		if tok.RefreshToken == "" {
			tok.RefreshToken = last.RefreshToken
		}
		return tok, true, nil
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && (re.ErrorCode == "invalid_grant" || re.ErrorCode == "interaction_required") {
		return nil, false, nil
	}
	return nil, false, wrap("refreshing the token", err)
}
