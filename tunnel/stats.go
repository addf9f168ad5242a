package tunnel

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Stats are counters of a Relay or an Agent since it was created. Opened
// and closed counters come in pairs: their difference is what is live now,
// so a leak shows as a difference that only grows.
type Stats struct {
	ConnectionsOpened uint64 // tunnel connections established
	ConnectionsClosed uint64
	// ConnectionsClosedBy counts closed connections by reason:
	// "peer-closed", "network-error", "lost" (nothing read for the ping
	// timeout), and "relay-closed", "drained" (relay) or "shutdown",
	// "moved" (agent).
	ConnectionsClosedBy map[string]uint64
	StreamsOpened       uint64 // requests and raw streams carried
	StreamsClosed       uint64
	BytesToAgent        uint64 // body bytes towards the agent: requests and raw streams
	BytesFromAgent      uint64 // body bytes from the agent: answers and raw streams
	// HandshakeFailures counts failed handshakes by reason: "bad-request",
	// "version", "hijack", "switch", "draining", "relay-closed",
	// "too-many-connections" (RelayConfig.MaxConnsPerCluster), and an
	// AuthError's Reason (e.g. "bad-secret").
	HandshakeFailures map[string]uint64
	// ClientsRefused counts client requests a ClientAuthorizer refused.
	ClientsRefused uint64
	// PeerForwarded counts requests sent on to another replica of a
	// fleet, which holds the cluster's connections.
	PeerForwarded uint64
	// PeerUnreachable counts attempts to reach another replica of a
	// fleet that failed (it could not be dialled, or failed the request)
	// other than its saying it has no live connection to the cluster.
	PeerUnreachable uint64
	// WriteTimeouts counts client streams reset because writing to the
	// client made no progress within the write timeout (relay only).
	WriteTimeouts uint64
	// Clusters is how many clusters have a tunnel connection here now
	// (relay only).
	Clusters int
	// StreamWindowGrown is how much of RelayConfig.StreamWindowBudget the
	// responses in flight hold now, in bytes: their windows beyond their
	// initial one (relay only).
	StreamWindowGrown int64
}

// conns is how many tunnel connections are open now.
func (c *counters) conns() int {
	return int(c.connsOpened.Load() - c.connsClosed.Load())
}

type counters struct {
	connsOpened, connsClosed     atomic.Uint64
	streamsOpened, streamsClosed atomic.Uint64
	bytesTo, bytesFrom           atomic.Uint64
	clientsRefused               atomic.Uint64
	peerForwarded                atomic.Uint64
	peerUnreachable              atomic.Uint64
	writeTimeouts                atomic.Uint64

	mu       sync.Mutex
	failures map[string]uint64
	closedBy map[string]uint64
}

// connClosed counts a closed connection and why.
func (c *counters) connClosed(reason string) {
	c.connsClosed.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closedBy == nil {
		c.closedBy = map[string]uint64{}
	}
	c.closedBy[reason]++
}

func (c *counters) handshakeFailed(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failures == nil {
		c.failures = map[string]uint64{}
	}
	c.failures[reason]++
}

func (c *counters) clientRefused() { c.clientsRefused.Add(1) }

func (c *counters) snapshot() Stats {
	s := Stats{
		ConnectionsOpened: c.connsOpened.Load(),
		ConnectionsClosed: c.connsClosed.Load(),
		StreamsOpened:     c.streamsOpened.Load(),
		StreamsClosed:     c.streamsClosed.Load(),
		BytesToAgent:      c.bytesTo.Load(),
		BytesFromAgent:    c.bytesFrom.Load(),
		HandshakeFailures: map[string]uint64{},
		ClientsRefused:    c.clientsRefused.Load(),
		PeerForwarded:     c.peerForwarded.Load(),
		PeerUnreachable:   c.peerUnreachable.Load(),
		WriteTimeouts:     c.writeTimeouts.Load(),
	}
	c.mu.Lock()
	for k, v := range c.failures {
		s.HandshakeFailures[k] = v
	}
	if c.closedBy != nil {
		s.ConnectionsClosedBy = maps.Clone(c.closedBy)
	}
	c.mu.Unlock()
	return s
}
