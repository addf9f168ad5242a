package signin

import "time"

// SetBackoff sets the first retry's wait of m, so that tests of the
// retries do not wait seconds.
func SetBackoff(m *ManagedIdentity, d time.Duration) { m.backoff = d }
