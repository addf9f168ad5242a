package tokens

import "time"

// SetClock gives a Config a clock, for tests.
func SetClock(c *Config, now func() time.Time) { c.now = now }

// SetCommandClock and SetCacheClock give sources a clock, for tests.
func SetCommandClock(c *CommandTokenSource, now func() time.Time) { c.now = now }

func SetCacheClock(s TokenSource, now func() time.Time) { s.(*cachedSource).now = now }
