package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/h2client"
)

// agentConn is one live tunnel connection, seen from the relay.
type agentConn struct {
	cc        *h2client.Conn
	conn      *connCloser // under cc: why it closed
	clusterID string
	agentID   string
	remote    string
	since     time.Time
	closed    atomic.Bool
	window    atomic.Int32 // the reconnect window its agent was told, in seconds
}

// cluster holds a cluster's live connections. The slice is replaced, never
// modified, so pickers read it without a lock.
type cluster struct {
	conns atomic.Pointer[[]*agentConn]
	next  atomic.Uint32 // round-robin cursor
}

// registry maps cluster IDs to their live connections.
type registry struct {
	mu       sync.RWMutex
	clusters map[string]*cluster
	closed   atomic.Bool // set under mu: no add follows it
	// starting counts, by cluster, accepted handshakes whose connections
	// are being set up: each holds a place under reserve's bound.
	starting map[string]int
	// hold, if set, hears of a cluster's first connection and its last,
	// in order (it is called under mu and must not block).
	hold func(clusterID string, held bool)
	// picker, if set, chooses the connection instead of pick's turns.
	picker Picker
	// added is closed, and replaced, when a connection is added (under
	// mu): a retry waiting for a live connection wakes on it.
	added chan struct{}
}

// addedSignal is closed when the next connection is added.
func (r *registry) addedSignal() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.added == nil {
		r.added = make(chan struct{})
	}
	return r.added
}

// add registers c; it reports false, adding nothing, once the registry is
// closed.
func (r *registry) add(c *agentConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return false
	}
	if r.clusters == nil {
		r.clusters = map[string]*cluster{}
	}
	cl := r.clusters[c.clusterID]
	if cl == nil {
		cl = &cluster{}
		r.clusters[c.clusterID] = cl
		if r.hold != nil {
			r.hold(c.clusterID, true)
		}
	}
	var old []*agentConn
	if p := cl.conns.Load(); p != nil {
		old = *p
	}
	conns := append(append(make([]*agentConn, 0, len(old)+1), old...), c)
	cl.conns.Store(&conns)
	if r.added != nil {
		close(r.added)
		r.added = nil
	}
	return true
}

// reserve takes a place for a connection of cluster id that is about to
// be set up, if the cluster holds fewer than limit (limit ≤ 0: no
// bound), counting those being set up; unreserve gives it back once the
// connection is registered or has failed.
func (r *registry) reserve(id string, limit int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.starting[id]
	if cl := r.clusters[id]; cl != nil {
		if p := cl.conns.Load(); p != nil {
			n += len(*p)
		}
	}
	if limit > 0 && n >= limit {
		return false
	}
	if r.starting == nil {
		r.starting = map[string]int{}
	}
	r.starting[id]++
	return true
}

func (r *registry) unreserve(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.starting[id]--; r.starting[id] <= 0 {
		delete(r.starting, id)
	}
}

// close refuses later adds and returns the connections registered now.
func (r *registry) close() []*agentConn {
	r.mu.Lock()
	r.closed.Store(true)
	r.mu.Unlock()
	return r.all()
}

// has reports whether the cluster has a registered connection.
// count is how many clusters have a connection here.
func (r *registry) count() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.clusters)
}

func (r *registry) has(clusterID string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.clusters[clusterID]
	return ok
}

func (r *registry) remove(c *agentConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cl := r.clusters[c.clusterID]
	if cl == nil {
		return
	}
	old := *cl.conns.Load()
	conns := make([]*agentConn, 0, len(old))
	for _, x := range old {
		if x != c {
			conns = append(conns, x)
		}
	}
	if len(conns) == 0 {
		delete(r.clusters, c.clusterID)
		if r.hold != nil {
			r.hold(c.clusterID, false)
		}
		return
	}
	cl.conns.Store(&conns)
}

// pick reserves a stream on one of the cluster's connections, round-robin
// among those that can take one: a connection that is going away (GOAWAY
// sent or received), closed, or at its stream limit is passed over.
//
// failed, if not nil, is a connection a request just failed on. Its agent
// has most likely died or is going away with every connection it has, so
// connections of other agents come first; another connection of the same
// agent is taken only when no other agent has one free.
func (r *registry) pick(clusterID string, failed *agentConn) (c *agentConn, known bool) {
	r.mu.RLock()
	cl := r.clusters[clusterID]
	r.mu.RUnlock()
	if cl == nil {
		return nil, false
	}
	conns := *cl.conns.Load()
	if r.picker != nil {
		return pickCustom(r.picker, clusterID, conns, failed), true
	}
	start := int(cl.next.Add(1))
	if failed != nil {
		for i := range conns {
			c := conns[(start+i)%len(conns)]
			if c.agentID != failed.agentID && c.cc.ReserveNewRequest() {
				return c, true
			}
		}
	}
	for i := range conns {
		c := conns[(start+i)%len(conns)]
		if c != failed && (failed == nil || c.agentID == failed.agentID) && c.cc.ReserveNewRequest() {
			return c, true
		}
	}
	return nil, true
}

// pickLive is pick for a retry after a request failed on failed (nil: at
// another replica): it passes over connections silent for suspectAfter, as a dark path leaves
// every connection on it (an idle one is only pinged every PingInterval,
// so it may be silent and well: the caller pings those).
func (r *registry) pickLive(clusterID string, failed *agentConn, suspectAfter time.Duration) *agentConn {
	conns := r.conns(clusterID)
	now := time.Now()
	var sameAgent *agentConn
	for _, c := range conns {
		if c == failed || now.Sub(c.cc.LastRead()) >= suspectAfter {
			continue
		}
		if failed != nil && c.agentID == failed.agentID {
			if sameAgent == nil {
				sameAgent = c
			}
			continue
		}
		if c.cc.ReserveNewRequest() {
			return c
		}
	}
	if sameAgent != nil && sameAgent.cc.ReserveNewRequest() {
		return sameAgent
	}
	return nil
}

// silent returns the cluster's connections, other than failed, that
// have been silent for suspectAfter.
func (r *registry) silent(clusterID string, failed *agentConn, suspectAfter time.Duration) []*agentConn {
	var out []*agentConn
	now := time.Now()
	for _, c := range r.conns(clusterID) {
		if c != failed && now.Sub(c.cc.LastRead()) >= suspectAfter {
			out = append(out, c)
		}
	}
	return out
}

// pickAgent reserves a stream on a connection of the cluster's agent
// agentID; known reports whether that agent has a connection here.
func (r *registry) pickAgent(clusterID, agentID string) (c *agentConn, known bool) {
	for _, c := range r.agentConns(clusterID, agentID) {
		if c.cc.ReserveNewRequest() {
			return c, true
		}
		known = true
	}
	return nil, known
}

// hasAgent reports whether the cluster's agent agentID has a connection
// here.
func (r *registry) hasAgent(clusterID, agentID string) bool {
	return len(r.agentConns(clusterID, agentID)) > 0
}

// agentConns returns the cluster's connections of agent agentID, or all
// of them for "".
func (r *registry) agentConns(clusterID, agentID string) []*agentConn {
	var out []*agentConn
	for _, c := range r.conns(clusterID) {
		if agentID == "" || c.agentID == agentID {
			out = append(out, c)
		}
	}
	return out
}

// conns returns the cluster's connections now (a slice never modified).
func (r *registry) conns(clusterID string) []*agentConn {
	r.mu.RLock()
	cl := r.clusters[clusterID]
	r.mu.RUnlock()
	if cl == nil {
		return nil
	}
	return *cl.conns.Load()
}

// all returns every live connection.
func (r *registry) all() []*agentConn {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*agentConn
	for _, cl := range r.clusters {
		out = append(out, *cl.conns.Load()...)
	}
	return out
}

// info describes c as a ConnInfo.
func (c *agentConn) info() ConnInfo {
	return ConnInfo{ClusterID: c.clusterID, AgentID: c.agentID, RemoteAddr: c.remote, Since: c.since, Streams: c.cc.State().StreamsActive}
}

// ConnInfo describes a live tunnel connection.
type ConnInfo struct {
	ClusterID  string
	AgentID    string
	RemoteAddr string
	Since      time.Time
	Streams    int // active streams now
}

// connCloser wraps a tunnel's net.Conn to learn when the HTTP/2 client
// connection on it closes it (the peer went away, a ping timed out, or the
// relay closed it), so the connection leaves the registry at once.
type connCloser struct {
	net.Conn
	once    sync.Once
	onClose func(reason string)
	// lostAfter: closed by HTTP/2 with nothing read for this long, the
	// connection was lost (pings went unanswered); sooner, the peer
	// closed it (a GOAWAY, then idle).
	lostAfter time.Duration
	lastRead  atomic.Int64           // unix nanoseconds of the last read of data
	readErr   atomic.Pointer[error]  // the first read error
	reason    atomic.Pointer[string] // set by the relay before it closes
}

// Reasons a tunnel connection closed, the reason label of
// tunnel_connections_closed_total.
const (
	closedByPeer       = "peer-closed"   // the other side closed it (a restart, a move, a drain)
	closedNetworkError = "network-error" // a read failed otherwise (timed out, unreachable)
	closedLost         = "lost"          // nothing read for the ping timeout: unanswered pings
	closedRelayClosed  = "relay-closed"  // Relay.Close
	closedRemoved      = "removed"       // Relay.Disconnect: the cluster is no longer known
	closedDrained      = "drained"       // Relay.Drain's deadline
	closedShutdown     = "shutdown"      // the agent is stopping
	closedMoved        = "moved"         // the agent moved it to another replica
)

func (c *connCloser) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	if err != nil {
		e := err // its own variable: taking err's address would move every read's err to the heap
		c.readErr.CompareAndSwap(nil, &e)
	}
	return n, err
}

// setReason says why the connection is about to close, the first reason
// given winning.
func (c *connCloser) setReason(reason string) { c.reason.CompareAndSwap(nil, &reason) }

// closeFor closes the connection for reason.
func (c *connCloser) closeFor(reason string) {
	c.setReason(reason)
	c.Close()
}

func (c *connCloser) Close() error {
	reason := c.why() // before closing makes reads fail
	err := c.Conn.Close()
	c.once.Do(func() { c.onClose(reason) })
	return err
}

// why the connection is closing: what the relay said, else what reading
// it met, else how long ago it last read anything.
func (c *connCloser) why() string {
	if r := c.reason.Load(); r != nil {
		return *r
	}
	// A read that failed because this side closed the socket says
	// nothing of why.
	if e := c.readErr.Load(); e != nil && !errors.Is(*e, net.ErrClosed) {
		// A reset is the peer closing too, with bytes still unread (a
		// process that stops or is killed mid-stream).
		if errors.Is(*e, io.EOF) || errors.Is(*e, syscall.ECONNRESET) {
			return closedByPeer
		}
		return closedNetworkError
	}
	if time.Since(time.Unix(0, c.lastRead.Load())) >= c.lostAfter {
		return closedLost
	}
	return closedByPeer
}
