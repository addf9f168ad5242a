package tunnel

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBackoffGrowsToCapWithFullJitter(t *testing.T) {
	var ceilings []time.Duration
	b := backoff{base: time.Second, max: 30 * time.Second, rand: func(n int64) int64 {
		ceilings = append(ceilings, time.Duration(n))
		return n - 1 // the top of the range
	}}
	for range 8 {
		b.next()
	}
	assert.Equal(t, []time.Duration{1e9, 2e9, 4e9, 8e9, 16e9, 30e9, 30e9, 30e9}, ceilings)
	b.reset()
	assert.Equal(t, time.Second, b.next(), "reset starts again from the base")

	// Real jitter stays within (0, ceiling].
	b = backoff{base: time.Second, max: 30 * time.Second}
	for i := range 200 {
		d := b.next()
		assert.True(t, d > 0 && d <= 30*time.Second, "wait %d = %s", i, d)
	}
}

func TestAfterFailureWaitsAsLongAsTheRelayAsks(t *testing.T) {
	top := func(n int64) int64 { return n - 1 } // the backoff's ceiling
	for _, tc := range []struct {
		name string
		err  error
		want time.Duration
	}{
		{"no Retry-After", &handshakeError{StatusCode: 401}, time.Second},
		{"a network error", errors.New("connection refused"), time.Second},
		{"Retry-After longer than the backoff", fmt.Errorf("wrapped: %w", &handshakeError{StatusCode: 429, RetryAfter: 10 * time.Second}), 10 * time.Second},
		{"Retry-After past the max", &handshakeError{StatusCode: 429, RetryAfter: time.Hour}, 30 * time.Second},
		{"Retry-After shorter than the backoff", &handshakeError{StatusCode: 503, RetryAfter: time.Millisecond}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := backoff{base: time.Second, max: 30 * time.Second, rand: top}
			assert.Equal(t, tc.want, b.afterFailure(tc.err))
		})
	}
	for v, want := range map[string]time.Duration{"10": 10 * time.Second, " 1 ": time.Second, "0": 0, "-5": 0,
		"Wed, 21 Oct 2026 07:28:00 GMT": 0, "": 0} {
		assert.Equal(t, want, retryAfter(v), "Retry-After %q", v)
	}
}

// After its relay went, an agent comes back within the relay's reconnect
// window where that is wider than its backoff, anywhere in it.
func TestAfterLossSpreadsOverTheRelaysWindow(t *testing.T) {
	var asked []time.Duration
	rec := func(n int64) int64 { asked = append(asked, time.Duration(n)); return n - 1 }
	b := backoff{base: time.Second, max: 30 * time.Second, rand: rec}
	assert.Equal(t, time.Second, b.afterLoss(0), "no window: the backoff")
	assert.Equal(t, 19*time.Second, b.afterLoss(19*time.Second), "the top of the relay's window")
	assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 19 * time.Second}, asked, "drawn over the whole window")

	// 19,000 agents with real jitter land about evenly over 19 s: no
	// second holds more than half again its share.
	var seconds [19]int
	for range 19000 {
		b := backoff{base: time.Second, max: 30 * time.Second}
		w := b.afterLoss(19 * time.Second)
		assert.True(t, w > 0 && w <= 19*time.Second)
		seconds[min(int(w/time.Second), 18)]++
	}
	for s, n := range seconds {
		assert.Less(t, n, 1500, "second %d: %d", s, n)
	}
}
