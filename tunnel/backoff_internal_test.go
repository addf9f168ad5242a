package tunnel

import (
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
