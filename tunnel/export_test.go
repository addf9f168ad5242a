package tunnel

import "time"

// SetAssertionClock replaces the authenticator's clock, for tests.
func SetAssertionClock(a *AssertionAuthenticator, now func() time.Time) { a.now = now }
