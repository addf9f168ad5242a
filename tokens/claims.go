package tokens

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
)

// What a verified token's claims mean, decided here once for the relay's
// front door (package access) and the cluster's side (package
// impersonate).

// ObjectID is the caller's stable ID: the oid claim (Entra ID's object
// ID of the user or service principal), or sub for tokens without one.
func (t *Token) ObjectID() string {
	if oid := t.StringClaim("oid"); oid != "" {
		return oid
	}
	return t.Subject
}

// AppID is the client application the token was issued to: appid in
// Entra ID v1 tokens, azp in v2 and other OIDC tokens.
func (t *Token) AppID() string {
	if id := t.StringClaim("appid"); id != "" {
		return id
	}
	return t.StringClaim("azp")
}

// GroupsOverage reports whether Entra ID left the groups out because the
// caller is in too many: the _claim_names pointer of JWT access tokens
// (source is then the endpoint it names, if any) or hasgroups (implicit
// flow). Such a token's groups must be looked up, e.g. through Microsoft
// Graph, before a rule that lists groups can judge it.
func (t *Token) GroupsOverage() (source string, overage bool) {
	if has, _ := t.Claims["hasgroups"].(bool); has {
		return "", true
	}
	names, _ := t.Claims["_claim_names"].(map[string]any)
	ref, ok := names["groups"].(string)
	if !ok {
		return "", false
	}
	sources, _ := t.Claims["_claim_sources"].(map[string]any)
	src, _ := sources[ref].(map[string]any)
	endpoint, _ := src["endpoint"].(string)
	return endpoint, true
}

// HasAuthContext reports whether the token says its caller met the
// Conditional Access authentication context id when signing in: the
// acrs claim of Microsoft Entra ID (a list of IDs, c1 to c99), which a
// token carries only when its sign-in was asked for them (a claims
// challenge).
func (t *Token) HasAuthContext(id string) bool {
	acrs, _ := t.Claims["acrs"].([]any)
	for _, a := range acrs {
		if s, ok := a.(string); ok && s == id {
			return true
		}
	}
	return false
}

// IsForeign reports whether a Verify error means the token is not one the
// verifier is for at all — another issuer or audience, or not a JWT, such
// as a Kubernetes service-account token — as opposed to one of its
// tokens that fails a check (expired, bad signature), which must never be
// passed on.
func IsForeign(err error) bool {
	return errors.Is(err, ErrIssuer) || errors.Is(err, ErrAudience) || errors.Is(err, ErrMalformed)
}

// Caller names who a verified token speaks for, the same in every token
// of theirs however often it is renewed: its issuer, tenant and object
// ID. The relay counts callers by it, and a re-attaching session must
// come from the same one.
func (t *Token) Caller() string {
	return "oidc\x00" + t.Issuer + "\x00" + t.TenantID + "\x00" + t.ObjectID()
}

// UnverifiedCaller names the caller of a token that was passed through
// unverified: nothing is known of it but the token, so each token is a
// caller of its own.
func UnverifiedCaller(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return "unverified " + hex.EncodeToString(sum[:])
}
