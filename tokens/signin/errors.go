package signin

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/oauth2"
)

// Sentinels that Error wraps, for a caller to act on.
var (
	// ErrDeclined: the user answered no on the sign-in page.
	ErrDeclined = errors.New("signin: the sign-in was declined")
	// ErrCodeExpired: the device code expired before anyone signed in with
	// it.
	ErrCodeExpired = errors.New("signin: the device code expired")
	// ErrInvalidClient: the app's credential (secret, certificate or
	// federated token) was refused.
	ErrInvalidClient = errors.New("signin: the app's credential was refused")
	// ErrUnknownClient: no such app in the tenant (often the wrong tenant).
	ErrUnknownClient = errors.New("signin: the app is not in this tenant")
	// ErrInvalidScope: the scope names no resource the tenant knows.
	ErrInvalidScope = errors.New("signin: the scope was refused")
)

// Error is a refusal from the token endpoint, with what the user can do.
type Error struct {
	// Step is what was being done ("device code sign-in", …).
	Step string
	// Code is the OAuth error code ("invalid_client", …).
	Code string
	// Description is the server's own words (Entra's start "AADSTS…").
	Description string

	sentinel error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("signin: %s: %s", e.Step, e.Code)
	if e.Description != "" {
		msg += ": " + firstLine(e.Description)
	}
	if hint := hints[e.sentinel]; hint != "" {
		msg += " (" + hint + ")"
	}
	return msg
}

// Is maps the error to its sentinel.
func (e *Error) Is(target error) bool { return e.sentinel != nil && target == e.sentinel }

var hints = map[error]string{
	ErrDeclined:      "sign in again and accept",
	ErrCodeExpired:   "run the command again and finish signing in within the time shown",
	ErrInvalidClient: "check the client secret, certificate or federated credential registered on the app",
	ErrUnknownClient: "check -tenant-id and -client-id",
	ErrInvalidScope:  "check -server-id: it must be the server app's ID or application ID URI",
}

// wrap turns x/oauth2's errors into *Error where the server refused, and
// otherwise adds the step.
func wrap(step string, err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("signin: %s: %w", step, err)
	}
	e := &Error{Step: step, Code: re.ErrorCode, Description: re.ErrorDescription}
	if e.Code == "" {
		e.Code = fmt.Sprintf("HTTP %d", re.Response.StatusCode)
	}
	switch re.ErrorCode {
	case "authorization_declined", "access_denied":
		e.sentinel = ErrDeclined
	case "expired_token", "code_expired":
		e.sentinel = ErrCodeExpired
	case "invalid_client":
		e.sentinel = ErrInvalidClient
	case "unauthorized_client":
		e.sentinel = ErrUnknownClient
	case "invalid_scope", "invalid_resource":
		e.sentinel = ErrInvalidScope
	}
	return e
}

// firstLine keeps Entra's description to its message: it goes on with a
// trace ID, correlation ID and timestamp on lines of their own.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\r\n")
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}
