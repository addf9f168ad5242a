package h2frame

import (
	"sync/atomic"
	"time"
)

// RoundTripMaxAge is how old a connection's round-trip time may be when a
// window grows by it, before a PING measures it again.
const RoundTripMaxAge = 10 * time.Second

// RoundTrip is a connection's smoothed round-trip time, which both ends
// grow their receive windows by: sampled from the SETTINGS exchange, then
// by PINGs. Its methods may be called at once from any goroutine.
type RoundTrip struct {
	nanos atomic.Int64
	at    atomic.Int64 // unix nanoseconds of the last sample
}

// Sample adds a measured round trip: the first is taken as it is, each
// later one for an eighth.
func (r *RoundTrip) Sample(d time.Duration) {
	if old := r.nanos.Load(); old > 0 {
		d = (7*time.Duration(old) + d) / 8
	}
	r.nanos.Store(int64(d))
	r.at.Store(time.Now().UnixNano())
}

// Get returns the round trip (0 until sampled) and whether, at now, it is
// older than RoundTripMaxAge and should be measured again.
func (r *RoundTrip) Get(now time.Time) (d time.Duration, stale bool) {
	return time.Duration(r.nanos.Load()), now.UnixNano()-r.at.Load() > int64(RoundTripMaxAge)
}

// WindowHoldsBack reports whether a stream's window, rather than its
// reader, is what holds the stream back: the reader took read bytes, more
// than half the window, over elapsed, in less than two round trips (4 ×
// the fraction of the window × rtt), the rule QUIC implementations grow
// their windows by. False while the round trip is unknown.
func WindowHoldsBack(read, window int64, elapsed, rtt time.Duration) bool {
	return rtt > 0 && read > window/2 && elapsed < time.Duration(4*float64(read)/float64(window)*float64(rtt))
}

// GrowthStep is how a window of target bytes that holds its stream back
// grows, out of a budget of budget bytes that every grown window of its
// kind shares: it doubles, up to limit; up to share out of whatever the
// budget has left, and past share only while half the budget stays free,
// so that windows grown that far leave the other half to windows growing
// to their share. The caller takes up to step bytes from the budget,
// leaving at least keep.
func GrowthStep(target, limit, share, budget int64) (step, keep int64) {
	step = min(target, limit-target)
	if target < share {
		return min(step, share-target), 0
	}
	return step, budget / 2
}
