package tokens

import (
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Config configures a Verifier. The zero value of every optional field is a
// sensible default.
type Config struct {
	// Issuers are the token issuers to trust. At least one is required.
	Issuers []Issuer
	// Algorithms allowed in token headers; default RS256 only. Any of the
	// RS, PS and ES families and EdDSA may be listed; "none" and the HMAC
	// algorithms are refused even if listed.
	Algorithms []string
	// ClockSkew tolerated on exp, nbf and iat; default 1 minute.
	ClockSkew time.Duration
	// RequiredClaims must be present with exactly these string values.
	RequiredClaims map[string]string
	// HTTPClient fetches discovery documents and key sets; default one with
	// a 30s timeout.
	HTTPClient *http.Client
	// MinRefreshInterval is the shortest time between two key-set fetches
	// for one issuer, however many unknown key IDs arrive; default 1 minute.
	MinRefreshInterval time.Duration
	// RefreshWait bounds how long a token signed with a key the verifier
	// does not know waits for the issuer's key set to be fetched again;
	// default DefaultRefreshWait. Past it the token is refused
	// (ErrUnknownKey, or ErrKeySet when no keys are known at all) while
	// the fetch goes on in the background, and known keys keep verifying.
	RefreshWait time.Duration
	// CacheSize bounds the cache of verified tokens; default 10000, and a
	// negative value turns the cache off.
	CacheSize int
	// NegativeCacheTTL is how long a rejected token stays rejected without
	// being looked at again, to shed floods of the same bad token; default
	// 10 seconds.
	NegativeCacheTTL time.Duration
	// Logger receives key-set refreshes and failures; nil discards.
	Logger *slog.Logger
	// PoP, if set, accepts proof-of-possession tokens bound to this
	// cluster (see PoPConfig).
	PoP *PoPConfig
	// Registerer, if set, receives the verifier's Prometheus metrics:
	// clusterconnect_token_verifications_total{outcome, reason} and
	// clusterconnect_token_key_refreshes_total{issuer, outcome}. The
	// caller serves them; nothing is registered globally.
	Registerer prometheus.Registerer
	// Now is the clock for exp, nbf, iat and refresh intervals; default
	// time.Now. Tests set it.
	Now func() time.Time
}

// Issuer is one trusted token issuer.
type Issuer struct {
	// URL is the issuer's identifier, the exact iss claim value.
	URL string
	// DiscoveryURL is where the OIDC discovery document is, when it is not
	// Issuer + "/.well-known/openid-configuration" (Microsoft Entra ID's v1
	// issuer, for one). Its issuer field must equal Issuer.
	DiscoveryURL string
	// JWKSURL, if set, is used instead of discovery.
	JWKSURL string
	// Audiences: a token must name at least one of them in aud. Required.
	Audiences []string
	// TenantIDs, if set, is the allow-list for the tid claim (Entra ID).
	TenantIDs []string
	// TokenVersion, if set, is the value the ver claim must have. Entra ID
	// issues version 1.0 tokens from its v1 issuer and 2.0 tokens from its
	// v2 issuer; EntraIssuers sets it, and a token whose ver does not
	// match its issuer is refused with ErrVersion.
	TokenVersion string
}

// Cloud is a Microsoft Entra ID national cloud.
type Cloud struct {
	// AuthorityHost serves discovery and issues v2 tokens, e.g.
	// https://login.microsoftonline.com.
	AuthorityHost string
	// V1IssuerHost issues v1 tokens, e.g. https://sts.windows.net.
	V1IssuerHost string
}

// Microsoft Entra ID clouds.
var (
	AzurePublic       = Cloud{AuthorityHost: "https://login.microsoftonline.com", V1IssuerHost: "https://sts.windows.net"}
	AzureUSGovernment = Cloud{AuthorityHost: "https://login.microsoftonline.us", V1IssuerHost: "https://sts.windows.net"}
	AzureChina        = Cloud{AuthorityHost: "https://login.partner.microsoftonline.cn", V1IssuerHost: "https://sts.chinacloudapi.cn"}
)

// EntraConfig describes the server application whose access tokens the
// cluster accepts.
type EntraConfig struct {
	// TenantIDs is the explicit allow-list of tenants (directory IDs, GUIDs).
	// Each gets its own v1 and v2 issuer; there is no wildcard, and the tid
	// claim must match the issuer's tenant.
	TenantIDs []string
	// Audiences of the server application: its client ID (v2 tokens) and
	// its Application ID URI (v1 tokens, e.g. api://my-server).
	Audiences []string
	// Cloud; default AzurePublic.
	Cloud Cloud
	// DiscoveryURL, if set, overrides where a tenant's discovery document is
	// fetched for a token version (1 or 2), for tests and private mirrors.
	DiscoveryURL func(tenant string, version int) string
}

// EntraIssuers returns the v1 and v2 issuers for each tenant.
func EntraIssuers(c EntraConfig) ([]Issuer, error) {
	if len(c.TenantIDs) == 0 {
		return nil, errors.New("tokens: Entra ID needs at least one tenant ID")
	}
	if len(c.Audiences) == 0 {
		return nil, errors.New("tokens: Entra ID needs the server application's client ID or Application ID URI as audience")
	}
	cloud := c.Cloud
	if cloud == (Cloud{}) {
		cloud = AzurePublic
	}
	var out []Issuer
	for _, tid := range c.TenantIDs {
		if tid == "" || strings.ContainsAny(tid, "/{}?#") || tid == "common" || tid == "organizations" {
			return nil, fmt.Errorf("tokens: tenant %q is not a tenant ID (templates and common endpoints are not allowed)", tid)
		}
		for _, version := range []int{1, 2} {
			is := Issuer{Audiences: c.Audiences, TenantIDs: []string{tid}, TokenVersion: fmt.Sprintf("%d.0", version)}
			if version == 1 {
				is.URL = cloud.V1IssuerHost + "/" + tid + "/"
				is.DiscoveryURL = cloud.AuthorityHost + "/" + tid + "/.well-known/openid-configuration"
			} else {
				is.URL = cloud.AuthorityHost + "/" + tid + "/v2.0"
				is.DiscoveryURL = cloud.AuthorityHost + "/" + tid + "/v2.0/.well-known/openid-configuration"
			}
			if c.DiscoveryURL != nil {
				is.DiscoveryURL = c.DiscoveryURL(tid, version)
			}
			out = append(out, is)
		}
	}
	return out, nil
}

// allowedAlgorithms are the algorithms a Config may allow.
var allowedAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

func (c *Config) validate() error {
	if len(c.Issuers) == 0 {
		return errors.New("tokens: Config.Issuers is empty")
	}
	seen := map[string]bool{}
	for _, is := range c.Issuers {
		if is.URL == "" {
			return errors.New("tokens: an issuer has no Issuer URL")
		}
		if seen[is.URL] {
			return fmt.Errorf("tokens: issuer %s is configured twice", is.URL)
		}
		seen[is.URL] = true
		if len(is.Audiences) == 0 {
			return fmt.Errorf("tokens: issuer %s has no audiences: every token would be accepted for any service", is.URL)
		}
		if strings.Contains(is.URL, "{") {
			return fmt.Errorf("tokens: issuer %s is a template; list each tenant instead", is.URL)
		}
	}
	for _, a := range c.Algorithms {
		if !allowedAlgorithms[a] {
			return fmt.Errorf("tokens: algorithm %q cannot be allowed (use RS*, PS*, ES* or EdDSA)", a)
		}
	}
	return nil
}
