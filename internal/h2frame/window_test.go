package h2frame_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/clusterconnect/clusterconnect/internal/h2frame"
)

// The first round trip is taken whole, later ones for an eighth; a sample
// older than RoundTripMaxAge asks to be measured again.
func TestRoundTripSmoothsAndAges(t *testing.T) {
	var r h2frame.RoundTrip
	d, stale := r.Get(time.Now())
	assert.Zero(t, d)
	assert.True(t, stale, "never sampled")
	r.Sample(80 * time.Millisecond)
	d, stale = r.Get(time.Now())
	assert.Equal(t, 80*time.Millisecond, d)
	assert.False(t, stale)
	r.Sample(0)
	d, _ = r.Get(time.Now())
	assert.Equal(t, 70*time.Millisecond, d)
	_, stale = r.Get(time.Now().Add(h2frame.RoundTripMaxAge + time.Second))
	assert.True(t, stale)
}

// A window holds its stream back when its reader took more than half of
// it in less than two round trips, and not while the round trip is
// unknown.
func TestWindowHoldsBack(t *testing.T) {
	const w, rtt = 1 << 20, 10 * time.Millisecond
	assert.True(t, h2frame.WindowHoldsBack(w/2+1, w, 19*time.Millisecond, rtt), "half a window in under two round trips")
	assert.False(t, h2frame.WindowHoldsBack(w/2+1, w, 21*time.Millisecond, rtt), "in over two")
	assert.True(t, h2frame.WindowHoldsBack(w, w, 39*time.Millisecond, rtt), "a whole window in under four")
	assert.False(t, h2frame.WindowHoldsBack(w/2, w, 0, rtt), "no more than half a window")
	assert.False(t, h2frame.WindowHoldsBack(w, w, 0, 0), "round trip unknown")
}

// A window doubles up to its share out of anything the budget has, and
// past the share keeps half the budget free.
func TestGrowthStep(t *testing.T) {
	const limit, share, budget = 4 << 20, 1 << 20, 8 << 20
	for _, tc := range []struct {
		target, step, keep int64
	}{
		{256 << 10, 256 << 10, 0},
		{768 << 10, 256 << 10, 0}, // to the share, not past it
		{1 << 20, 1 << 20, budget / 2},
		{3 << 20, 1 << 20, budget / 2}, // to the limit, not past it
		{4 << 20, 0, budget / 2},
	} {
		step, keep := h2frame.GrowthStep(tc.target, limit, share, budget)
		assert.Equal(t, tc.step, step, "step from %d", tc.target)
		assert.Equal(t, tc.keep, keep, "kept from %d", tc.target)
	}
}
