package source

import "time"

// SetCommandClock gives a command source a clock, for tests.
func SetCommandClock(c *Command, now func() time.Time) { c.now = now }
