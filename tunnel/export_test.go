package tunnel

import (
	"net/http"
	"time"
)

// SetAssertionClock replaces the authenticator's clock, for tests.
func SetAssertionClock(a *AssertionAuthenticator, now func() time.Time) { a.now = now }

// ConfigureServerHolding is ConfigureServer with headers held for hold,
// so that a test does not depend on how fast the machine answers.
func ConfigureServerHolding(srv *http.Server, hold time.Duration) error {
	return configureServer(srv, hold)
}
