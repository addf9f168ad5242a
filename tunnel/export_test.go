package tunnel

import (
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"
)

// SetAssertionClock replaces the authenticator's clock, for tests.
func SetAssertionClock(a *AssertionAuthenticator, now func() time.Time) { a.now = now }

// ConfigureServerHolding is ConfigureServer with headers held for hold,
// so that a test does not depend on how fast the machine answers.
func ConfigureServerHolding(srv *http.Server, hold time.Duration) error {
	return configureServer(srv, hold)
}

// SetPeerIdleTimeout sets how long relays made from now on keep an idle
// connection to another replica; the returned func puts it back.
func SetPeerIdleTimeout(d time.Duration) (restore func()) {
	old := peerIdleTimeout
	peerIdleTimeout = d
	return func() { peerIdleTimeout = old }
}

// HeapInUse is the heap in use after garbage collection, sync.Pool's
// victims included.
func HeapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// SetFleetSizeEvery sets how often relays made from now on check their
// fleet's size; the returned func puts it back.
func SetFleetSizeEvery(d time.Duration) (restore func()) {
	old := fleetSizeEvery
	fleetSizeEvery = d
	return func() { fleetSizeEvery = old }
}

// ReconnectWindows are the reconnect windows a's open connections were
// told by their relay.
func ReconnectWindows(a *Agent) []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []time.Duration
	for tc := range a.conns {
		out = append(out, time.Duration(tc.window.Load()))
	}
	return out
}

// HandshakesWaiting is how many handshakes wait for a place under ln's
// MaxHandshakes (ln from ClientListener).
func HandshakesWaiting(ln net.Listener) int32 { return ln.(*clientListener).waiting.Load() }

// CountClientWrites has ln, from ClientListener, count the writes to its
// connections' sockets in n.
func CountClientWrites(ln net.Listener, n *atomic.Int64) { ln.(*clientListener).writes = n }
