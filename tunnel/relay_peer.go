package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/h2client"
)

// Directory is what a relay that is one replica of a fleet shares with the
// others: which replicas hold tunnel connections for which cluster. The
// relay tells it what it holds and asks it where to forward a request for
// a cluster it does not hold. Implementations keep a local view fed from a
// shared store (package etcddir keeps it in etcd) and answer from it
// without waiting on the store, so a replica keeps serving its own
// clusters and forwarding with its last view while the store is away.
type Directory interface {
	// Hold records whether this replica holds connections for clusterID:
	// true when the cluster's first connection arrives, false when its
	// last leaves, in that order. It must not block; implementations
	// publish in the background.
	Hold(clusterID string, held bool)
	// Holders returns the peer addresses (host:port) of the other
	// replicas holding connections for clusterID, in the view's current
	// state; none if no other replica does.
	Holders(clusterID string) []string
}

// ReplicaCounter is implemented by a Directory that knows how many
// replicas the fleet has (itself included), which a relay tells agents.
type ReplicaCounter interface {
	Replicas() int
}

// ErrPeerUnreachable is returned (and answered with 502) when the cluster's
// connections are held by other replicas and none of them could be
// reached.
var ErrPeerUnreachable = errors.New("tunnel: no relay replica holding the cluster could be reached")

// peers forwards requests to the replicas that hold a cluster: ordinary
// requests over HTTP/2 on the relay's own client (the one it drives agents'
// connections with, so that a download through a replica gets the same
// growing window out of the same budget as one from an agent), one
// HTTP/1.1 connection per upgrade.
type peers struct {
	tls     *tls.Config           // as configured, for upgrades
	h2tls   *tls.Config           // the same, offering only h2
	roots   func() *x509.CertPool // RelayConfig.PeerRootCAs
	h2      *h2client.Config      // the relay's: one window budget for agents and peers
	timeout time.Duration         // for an upgrade's answer
	idle    time.Duration         // peerIdleTimeout when made

	mu      sync.Mutex
	conns   map[string][]*peerClient // by peer address
	dialing map[string]*peerDial     // one dial per peer at a time
	closed  bool
	sweep   *time.Timer // closes connections idle for peerIdleTimeout
}

// peerDialTimeout bounds a dial and TLS handshake to a replica.
const peerDialTimeout = 10 * time.Second

// peerIdleTimeout is how long a connection to a replica is kept with no
// request on it: a burst that needed more than one gives them back after
// this, and a replica nothing is forwarded to any more is not pinged
// forever. A variable for tests.
var peerIdleTimeout = 90 * time.Second

// peerClient is one connection to a replica and since when it has been
// without a request, as the last sweep saw it.
type peerClient struct {
	cc        *h2client.Conn
	idleSince time.Time // zero: busy at the last sweep
}

type peerDial struct {
	done chan struct{}
	err  error
}

func newPeers(c *RelayConfig, h2 *h2client.Config) *peers {
	t := c.PeerTLSConfig.Clone()
	t.NextProtos = []string{"h2"}
	p := &peers{
		tls:     c.PeerTLSConfig,
		h2tls:   t,
		roots:   c.PeerRootCAs,
		h2:      h2,
		timeout: c.UpgradeTimeout,
		idle:    peerIdleTimeout,
		conns:   map[string][]*peerClient{},
		dialing: map[string]*peerDial{},
	}
	p.sweep = time.AfterFunc(p.idle/2, p.closeIdle)
	return p
}

// roundTrip sends req (its URL's host a replica's peer address) on a
// connection to that replica, opening one if none can take it. A request
// goes on a fresh connection once if the replica refused it unprocessed
// (its connection was going away, or full) and it has no body, or if its
// connection failed under it and it may be sent again (retryable).
func (p *peers) roundTrip(req *http.Request, peer string, retryable bool) (*http.Response, error) {
	for try := 0; ; try++ {
		cc, err := p.get(req.Context(), peer)
		if err != nil {
			return nil, err
		}
		resp, err := cc.RoundTrip(req)
		unprocessed := req.Body == nil && (errors.Is(err, h2client.ErrGoingAway) || errors.Is(err, h2client.ErrNoSlot))
		if err == nil || try > 0 || req.Context().Err() != nil || !(unprocessed || retryable) {
			return resp, err
		}
	}
}

// get returns a connection to peer with a stream reserved on it.
func (p *peers) get(ctx context.Context, peer string) (*h2client.Conn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrRelayClosed
		}
		var cc *h2client.Conn
		p.prune(peer, func(c *peerClient) bool {
			if !c.cc.Alive() {
				return false
			}
			if cc == nil && c.cc.ReserveNewRequest() {
				cc = c.cc
				c.idleSince = time.Time{}
			}
			return true
		})
		if cc != nil {
			p.mu.Unlock()
			return cc, nil
		}
		if d := p.dialing[peer]; d != nil {
			p.mu.Unlock()
			select {
			case <-d.done:
				if d.err != nil {
					return nil, d.err
				}
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		d := &peerDial{done: make(chan struct{})}
		p.dialing[peer] = d
		p.mu.Unlock()

		// The dial goes on when this request's client leaves: others may
		// be waiting for it.
		cc, d.err = p.dial(context.WithoutCancel(ctx), peer)
		p.mu.Lock()
		delete(p.dialing, peer)
		if d.err == nil {
			if p.closed {
				cc.Close()
				d.err = ErrRelayClosed
			} else {
				p.conns[peer] = append(p.conns[peer], &peerClient{cc: cc})
			}
		}
		p.mu.Unlock()
		close(d.done)
		if d.err != nil {
			return nil, d.err
		}
	}
}

// dial opens an HTTP/2 connection to peer.
func (p *peers) dial(ctx context.Context, peer string) (*h2client.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, peerDialTimeout)
	defer cancel()
	conn, err := (&tls.Dialer{Config: p.withRoots(p.h2tls)}).DialContext(ctx, "tcp", peer)
	if err != nil {
		return nil, err
	}
	if proto := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; proto != "h2" {
		conn.Close()
		return nil, fmt.Errorf("the replica's peer listener does not speak HTTP/2 (ALPN %q)", proto)
	}
	return h2client.New(p.h2, conn)
}

// withRoots is c with the peer CA in force as its RootCAs, if the pool
// can change (RelayConfig.PeerRootCAs).
func (p *peers) withRoots(c *tls.Config) *tls.Config {
	if p.roots == nil {
		return c
	}
	c = c.Clone()
	c.RootCAs = p.roots()
	return c
}

// closeIdle closes the connections that have had no request for the idle
// timeout (give or take half of it), and sweeps again later.
func (p *peers) closeIdle() {
	now := time.Now()
	var idle []*h2client.Conn
	p.mu.Lock()
	defer func() {
		p.mu.Unlock()
		for _, cc := range idle {
			cc.Close()
		}
	}()
	if p.closed {
		return
	}
	for peer := range p.conns {
		p.prune(peer, func(c *peerClient) bool {
			switch {
			case !c.cc.Alive():
				return false
			case c.cc.State().StreamsActive > 0:
				c.idleSince = time.Time{}
			case c.idleSince.IsZero():
				c.idleSince = now
			case now.Sub(c.idleSince) >= p.idle:
				idle = append(idle, c.cc)
				return false
			}
			return true
		})
	}
	p.sweep.Reset(p.idle / 2)
}

// prune keeps the connections to peer for which keep is true, and the
// peer's entry only while it has some. Under mu.
func (p *peers) prune(peer string, keep func(*peerClient) bool) {
	list := slices.DeleteFunc(p.conns[peer], func(c *peerClient) bool { return !keep(c) })
	if len(list) == 0 {
		delete(p.conns, peer)
	} else {
		p.conns[peer] = list
	}
}

// close ends every connection to replicas; requests on them fail.
func (p *peers) close() {
	p.mu.Lock()
	p.closed = true
	p.sweep.Stop()
	all := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, list := range all {
		for _, c := range list {
			c.cc.Close()
		}
	}
}

// viaPeer sends out, a request for cluster id with the cluster prefix
// removed, to one of the replicas that hold the cluster, and on to the
// next holder when one cannot be reached, under the retry rule
// (retry.go).
func (r *Relay) viaPeer(holders []string, id string, out *http.Request, upgrade bool) (*http.Response, error) {
	a := newAttempt(out)
	var errs []error
	unreachable := false // whether a holder could not be asked at all
	order, start := r.orderHolders(id, holders)
	for i := range order {
		peer := order[(start+i)%len(order)]
		req := peerRequest(out, id, peer)
		if agent := toAgent(out.Context()); agent != "" {
			req.Header.Set(HeaderToAgent, agent)
		}
		var resp *http.Response
		var err error
		r.stats.peerForwarded.Add(1)
		if upgrade {
			resp, err = r.peers.upgrade(req, peer)
		} else {
			resp, err = a.result(r.peers.roundTrip(req, peer, a.retryable))
		}
		if err == nil {
			err = noLiveConn(resp)
		}
		if err == nil {
			return resp, nil
		}
		if errors.Is(err, ErrRelayClosed) {
			return nil, err
		}
		if errors.Is(err, errNoLiveConn) {
			// Said, not wrapped: the words are for the client, and only
			// a replica answers errNoLiveConn.
			errs = append(errs, fmt.Errorf("%s: %v", peer, err))
		} else {
			unreachable = true
			r.stats.peerUnreachable.Add(1)
			r.log.Warn("relay replica unreachable", "peer", peer, "cluster", id, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", peer, err))
		}
		if !a.again(err) {
			break
		}
	}
	err := fmt.Errorf("%w: %w", ErrPeerUnreachable, errors.Join(errs...))
	if !unreachable {
		// Every holder asked said it holds no connection now: the
		// directory had not caught up with the agent.
		err = fmt.Errorf("%w: %w", ErrNotConnected, errors.Join(errs...))
	}
	if !upgrade && a.again(err) {
		// Every holder failed it: the cluster's connections may have
		// gone dark, and its agent's new ones be anywhere, here too.
		return r.retry(id, out, nil, nil, false, err)
	}
	return nil, err
}

// peerRequest is out, a request for cluster id with the cluster prefix
// removed, addressed to the replica at peer.
func peerRequest(out *http.Request, id, peer string) *http.Request {
	req := out.Clone(out.Context())
	req.URL.Scheme, req.URL.Host = "https", peer
	req.URL.Path = "/clusters/" + id + out.URL.Path
	if out.URL.RawPath != "" {
		req.URL.RawPath = "/clusters/" + id + out.URL.RawPath
	}
	req.Host = out.Host
	return req
}

// errNoLiveConn is a replica's answer to another replica's retry (or to
// a request whose attempt failed there) when none of the cluster's
// connections it holds was heard from lately, and to any request of
// another replica for a cluster it holds no connection of: the asking
// replica looks elsewhere. It is answered as 503 with headerNoLiveConn.
var errNoLiveConn = errors.New("tunnel: no connection of the cluster heard from lately on that replica")

// noLiveConn turns a replica's errNoLiveConn answer back into the error,
// closing its body.
func noLiveConn(resp *http.Response) error {
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(headerNoLiveConn) == "" {
		return nil
	}
	resp.Body.Close()
	return errNoLiveConn
}

// upgrade sends an upgrade request to a replica on a connection of its
// own, which becomes the upgraded connection's far end.
func (p *peers) upgrade(req *http.Request, peer string) (*http.Response, error) {
	t := p.withRoots(p.tls).Clone()
	t.NextProtos = []string{"http/1.1"}
	ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: t}).DialContext(ctx, "tcp", peer)
	if err != nil {
		return nil, err
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // Request.Write would add Go's own
	}
	conn.SetDeadline(time.Now().Add(p.timeout))
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		conn.Close()
		return nil, fmt.Errorf("%w: the replica holding the cluster did not answer an upgrade within %v", ErrAgentTimeout, p.timeout)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	up := peerConn{conn.(*tls.Conn)}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body = &closeBoth{ReadCloser: resp.Body, up: up}
		return resp, nil
	}
	conn.SetDeadline(time.Time{})
	resp.Body = keepUpgrade(req.Context(), &upgradedBody{r: br, up: up})
	return resp, nil
}

// peerConn is a replica's connection as the far end of an upgrade.
type peerConn struct{ *tls.Conn }

func (c peerConn) abort() { c.Conn.Close() }

// PeerHandler returns the handler a replica serves other replicas on:
// requests under /clusters/{id}/ that a replica forwards because this one
// holds the cluster's connections. It asks no ClientAuthorizer (the
// replica the caller reached did) and never forwards again (one peer hop
// at most), so serve it only to other replicas: on a listener of its own
// whose TLS requires a client certificate from the fleet's peer CA
// (tls.RequireAndVerifyClientCert), never on the clients' listener.
func (r *Relay) PeerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Upgrade") == peerDialProtocol {
			r.servePeerDial(w, req)
			return
		}
		r.serveCluster(w, req, true)
	})
}

// holders returns the other replicas to forward a request for id to: only
// when this relay is one of a fleet, holds no connection for id itself,
// and the request did not come from a replica.
func (r *Relay) holders(id string, fromPeer bool, agent string) []string {
	if fromPeer || r.cfg.Directory == nil {
		return nil
	}
	if agent != "" && r.reg.hasAgent(id, agent) || agent == "" && r.reg.has(id) {
		return nil
	}
	return r.cfg.Directory.Holders(id)
}

var _ rawUpstream = peerConn{}
