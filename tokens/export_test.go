package tokens

import "time"

// SetCommandClock and SetCacheClock give sources a clock, for tests.
func SetCommandClock(c *CommandTokenSource, now func() time.Time) { c.now = now }

func SetCacheClock(s TokenSource, now func() time.Time) { s.(*cachedSource).now = now }
