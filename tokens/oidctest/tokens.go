package oidctest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// EntraClaims describe a Microsoft Entra ID access token. Zero fields are
// left out of the token, except the times, which default to a token issued
// now and valid for an hour, and Version, which defaults to 2.
type EntraClaims struct {
	Version           int // 1 or 2
	Tenant            string
	Audience          string
	Subject           string
	OID               string // the user's or service principal's object ID
	UPN               string // v1 and v2 when configured; absent for guests and service principals
	PreferredUsername string // v2
	Name              string
	Groups            []string // group object IDs
	Roles             []string // app roles
	IDType            string   // "app" for app-only tokens (the optional idtyp claim)
	AppID             string   // appid in v1, azp in v2
	Scope             string   // scp, for delegated tokens
	// GroupsOverage replaces groups with the _claim_names/_claim_sources
	// pointer Entra sends when a user is in too many groups.
	GroupsOverage bool
	IssuedAt      time.Time
	NotBefore     time.Time
	Expiry        time.Time
	// Extra is merged in last: it adds claims and overrides the ones above;
	// a nil value removes a claim.
	Extra map[string]any
}

// Map returns the token's claims as they would be serialized.
func (c EntraClaims) Map() map[string]any {
	now := time.Now()
	version := c.Version
	if version == 0 {
		version = 2
	}
	m := map[string]any{
		"iss": EntraIssuer(c.Tenant, version),
		"ver": fmt.Sprintf("%d.0", version),
		"iat": unixOr(c.IssuedAt, now),
		"nbf": unixOr(c.NotBefore, now),
		"exp": unixOr(c.Expiry, now.Add(time.Hour)),
	}
	set := func(k string, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("tid", c.Tenant)
	set("aud", c.Audience)
	set("sub", c.Subject)
	set("oid", c.OID)
	set("upn", c.UPN)
	set("name", c.Name)
	set("idtyp", c.IDType)
	set("scp", c.Scope)
	if version == 1 {
		set("appid", c.AppID)
		set("unique_name", c.UPN)
	} else {
		set("azp", c.AppID)
		set("preferred_username", c.PreferredUsername)
	}
	if len(c.Groups) > 0 {
		m["groups"] = c.Groups
	}
	if len(c.Roles) > 0 {
		m["roles"] = c.Roles
	}
	if c.GroupsOverage {
		delete(m, "groups")
		m["_claim_names"] = map[string]any{"groups": "src1"}
		m["_claim_sources"] = map[string]any{"src1": map[string]any{
			"endpoint": "https://graph.windows.net/" + c.Tenant + "/users/" + c.OID + "/getMemberObjects",
		}}
	}
	for k, v := range c.Extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func unixOr(t, def time.Time) int64 {
	if t.IsZero() {
		t = def
	}
	return t.Unix()
}

// EntraToken signs an Entra-shaped access token with the default key.
func (is *Issuer) EntraToken(c EntraClaims) (string, error) {
	return Sign(is.SigningKey(), c.Map(), nil)
}

// Token signs arbitrary claims with the default key.
func (is *Issuer) Token(claims any) (string, error) {
	return Sign(is.SigningKey(), claims, nil)
}

// Sign signs claims with key in compact serialization, with the key's ID in
// the kid header and typ JWT. headers adds or overrides protected headers.
func Sign(key *Key, claims any, headers map[string]any) (string, error) {
	opts := (&jose.SignerOptions{}).WithType("JWT")
	for k, v := range headers {
		opts = opts.WithHeader(jose.HeaderKey(k), v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{
		Algorithm: key.Algorithm,
		Key:       jose.JSONWebKey{Key: key.Private, KeyID: key.ID},
	}, opts)
	if err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	return jws.CompactSerialize()
}

// Hostile tokens, for the verifier's reject cases.

// AlgNone returns claims in an unsigned token whose header says alg "none".
func AlgNone(claims any) string {
	return compact(map[string]any{"alg": "none", "typ": "JWT"}, claims, nil)
}

// Unsigned returns claims with an RS256 header and an empty signature.
func Unsigned(key *Key, claims any) string {
	return compact(map[string]any{"alg": "RS256", "typ": "JWT", "kid": key.ID}, claims, nil)
}

// HS256WithPublicKey signs claims with HMAC-SHA256 keyed by the PEM encoding
// of key's public half: the algorithm-confusion attack on verifiers that
// hand a public key to whatever algorithm the header names.
func HS256WithPublicKey(key *Key, claims any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Private.Public())
	if err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	header := map[string]any{"alg": "HS256", "typ": "JWT", "kid": key.ID}
	unsigned := compact(header, claims, nil)
	signingInput := strings.TrimSuffix(unsigned, ".")
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(signingInput))
	return signingInput + "." + b64(mac.Sum(nil)), nil
}

// Tamper replaces one claim in a signed compact token and keeps the original
// signature.
func Tamper(token, claim string, value any) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("oidctest: not a compact JWS")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	claims[claim] = value
	payload, _ := json.Marshal(claims)
	return parts[0] + "." + b64(payload) + "." + parts[2], nil
}

// TwoSignatures signs claims with both keys in JWS JSON serialization, the
// only form that can carry more than one signature.
func TwoSignatures(a, b *Key, claims any) (string, error) {
	signer, err := jose.NewMultiSigner([]jose.SigningKey{
		{Algorithm: a.Algorithm, Key: jose.JSONWebKey{Key: a.Private, KeyID: a.ID}},
		{Algorithm: b.Algorithm, Key: jose.JSONWebKey{Key: b.Private, KeyID: b.ID}},
	}, nil)
	if err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("oidctest: %w", err)
	}
	return jws.FullSerialize(), nil
}

func compact(header map[string]any, claims any, sig []byte) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(claims)
	return b64(h) + "." + b64(p) + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
