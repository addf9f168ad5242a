package tokens

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Every error Verify returns wraps exactly one of them, so a
// caller can tell a client's mistake from an outage with errors.Is. Messages
// never contain the token.
var (
	// ErrMalformed: not a compact JWS with a JSON claim set.
	ErrMalformed = errors.New("tokens: malformed token")
	// ErrAlgorithm: the header names an algorithm that is not allowed.
	ErrAlgorithm = errors.New("tokens: signing algorithm not allowed")
	// ErrIssuer: the iss claim is not a configured issuer.
	ErrIssuer = errors.New("tokens: untrusted issuer")
	// ErrAudience: no aud value is one of the issuer's audiences.
	ErrAudience = errors.New("tokens: wrong audience")
	// ErrVersion: the ver claim is not the version the issuer issues (an
	// Entra ID v1 issuer with ver 2.0, or the other way round): a sign of
	// forgery or of a misconfigured issuer.
	ErrVersion = errors.New("tokens: token version does not match its issuer")
	// ErrTenant: the tid claim is missing or not an allowed tenant.
	ErrTenant = errors.New("tokens: tenant not allowed")
	// ErrExpired: exp has passed (see *ExpiredError).
	ErrExpired = errors.New("tokens: token expired")
	// ErrNotYetValid: nbf or iat is in the future.
	ErrNotYetValid = errors.New("tokens: token not yet valid")
	// ErrMissingClaim: exp, or a required claim, is absent or different.
	ErrMissingClaim = errors.New("tokens: required claim missing")
	// ErrUnknownKey: no key of the issuer's key set has the token's kid,
	// even after a refresh.
	ErrUnknownKey = errors.New("tokens: unknown signing key")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("tokens: bad signature")
	// ErrKeySet: the issuer's discovery document or key set could not be
	// fetched and no earlier keys are known. This is the server's problem,
	// not the client's.
	ErrKeySet = errors.New("tokens: issuer keys unavailable")
	// ErrReservedName: the identity would be a reserved Kubernetes user or
	// group (system:…).
	ErrReservedName = errors.New("tokens: reserved Kubernetes name")
	// ErrGroupsOverage: the user is in more groups than fit in the token
	// (see *GroupsOverageError).
	ErrGroupsOverage = errors.New("tokens: groups not in token (overage)")

	// ErrPoP: a proof-of-possession token that is malformed, or PoP
	// tokens are not enabled.
	ErrPoP = errors.New("tokens: bad proof-of-possession token")
	// ErrPoPSignature: the PoP token is not signed by the key it carries.
	ErrPoPSignature = errors.New("tokens: PoP token signature does not verify")
	// ErrPoPStale: the PoP token was signed too long ago (or in the future).
	ErrPoPStale = errors.New("tokens: PoP token too old")
	// ErrPoPHost: the PoP token is for another cluster (its u claim).
	ErrPoPHost = errors.New("tokens: PoP token is for another host")
	// ErrPoPBinding: the access token is not bound to the PoP token's key.
	ErrPoPBinding = errors.New("tokens: access token not bound to the PoP key")
	// ErrPoPReplayed: the PoP token was presented before.
	ErrPoPReplayed = errors.New("tokens: PoP token replayed")
	// ErrPoPRequired: a plain bearer token where only PoP tokens are taken.
	ErrPoPRequired = errors.New("tokens: a proof-of-possession token is required")
)

// ExpiredError reports an expired token and when it expired.
type ExpiredError struct {
	Expiry time.Time
}

// Error says when the token expired.
func (e *ExpiredError) Error() string {
	return fmt.Sprintf("tokens: token expired at %s: get a new one", e.Expiry.UTC().Format(time.RFC3339))
}

// Is makes an ExpiredError match ErrExpired.
func (e *ExpiredError) Is(target error) bool { return target == ErrExpired }

// GroupsOverageError reports a token that names where the groups are instead
// of carrying them: Microsoft Entra ID does this (the _claim_names and
// _claim_sources claims, or hasgroups) when a user is in more groups than
// fit in a token. Resolving them needs Microsoft Graph; until a resolver is
// configured, such a token cannot be mapped to groups and is refused rather
// than admitted without its groups.
type GroupsOverageError struct {
	Source string // the endpoint named in _claim_sources, if any
}

// Error says what to do about the missing groups.
func (e *GroupsOverageError) Error() string {
	return "tokens: the token does not carry the user's groups (Entra ID groups overage): " +
		"assign fewer groups to the user, use app roles, or configure group resolution"
}

// Is makes a GroupsOverageError match ErrGroupsOverage.
func (e *GroupsOverageError) Is(target error) bool { return target == ErrGroupsOverage }

// claimError builds an error wrapping a sentinel with a detail that is safe
// to show (never the token).
func claimError(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
