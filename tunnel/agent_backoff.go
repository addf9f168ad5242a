package tunnel

import (
	"errors"
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
	return b.uniform(ceiling)
}

// uniform is a wait uniform in (0, d].
func (b *backoff) uniform(d time.Duration) time.Duration {
	r := b.rand
	if r == nil {
		r = rand.Int64N
	}
	return time.Duration(r(int64(d))) + 1
}

func (b *backoff) reset() { b.attempt = 0 }

// afterLoss is the wait before dialing again after a good connection
// closed: the next backoff, or, where its relay asked for a reconnect
// window wider than that, a moment uniform in the window. A relay holding
// many agents asks for one: when it restarts, they come back spread over
// it instead of within a second, where their handshakes would time out
// and come back in waves.
func (b *backoff) afterLoss(window time.Duration) time.Duration {
	wait := b.next()
	if window > wait {
		wait = b.uniform(window)
	}
	return wait
}

// afterFailure is the wait before trying again after err: the next
// backoff, or what the relay asked for with Retry-After (it is draining,
// or the cluster holds all the connections it may there) if that is
// longer, up to the backoff's max.
func (b *backoff) afterFailure(err error) time.Duration {
	wait := b.next()
	var he *handshakeError
	if errors.As(err, &he) && he.RetryAfter > wait {
		wait = min(he.RetryAfter, b.max)
	}
	return wait
}
