package tunnel

import (
	"math/rand/v2"
	"time"
)

// backoff is exponential backoff with full jitter: the n-th wait is uniform
// in [0, min(max, base·2ⁿ)). Full jitter spreads a crowd of agents that lost
// the same relay at the same moment instead of bringing them back in waves.
type backoff struct {
	base, max time.Duration
	attempt   int
	rand      func(n int64) int64 // for tests
}

func (b *backoff) next() time.Duration {
	ceiling := b.max
	if b.attempt < 62 && b.base<<b.attempt > 0 && b.base<<b.attempt < b.max {
		ceiling = b.base << b.attempt
	}
	b.attempt++
	r := b.rand
	if r == nil {
		r = rand.Int64N
	}
	return time.Duration(r(int64(ceiling)) + 1)
}

func (b *backoff) reset() { b.attempt = 0 }
