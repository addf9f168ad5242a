package tokens

import "time"

// SetClock gives a Config a clock, for tests.
func SetClock(c *Config, now func() time.Time) { c.now = now }
