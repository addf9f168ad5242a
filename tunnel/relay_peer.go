package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"time"
)

// Directory is what a relay that is one replica of a fleet shares with the
// others: which replicas hold tunnel connections for which cluster. The
// relay tells it what it holds and asks it where to forward a request for
// a cluster it does not hold. Implementations keep a local view fed from a
// shared store (package fleet/etcddir keeps it in etcd) and answer from it
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

// peers forwards requests to the replicas that hold a cluster: HTTP/2 for
// ordinary requests, one HTTP/1.1 connection per upgrade.
type peers struct {
	tls     *tls.Config
	h2      *http.Transport
	timeout time.Duration // for an upgrade's answer
}

func newPeers(c *RelayConfig) *peers {
	t := c.PeerTLSConfig.Clone()
	t.NextProtos = []string{"h2"}
	return &peers{
		tls: c.PeerTLSConfig,
		h2: &http.Transport{
			TLSClientConfig:     t,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
			DisableCompression:  true,
			HTTP2: &http.HTTP2Config{
				MaxReceiveBufferPerStream:     int(c.MaxReceiveBufferPerStream),
				MaxReceiveBufferPerConnection: int(c.MaxReceiveBufferPerStream) * DefaultMaxConcurrentStreams,
				SendPingTimeout:               c.PingTimeout,
				PingTimeout:                   c.PingTimeout,
				WriteByteTimeout:              c.WriteTimeout,
			},
		},
		timeout: c.UpgradeTimeout,
	}
}

// viaPeer sends out, a request for cluster id with the cluster prefix
// removed, to one of the replicas that hold the cluster. A request that
// cannot have been processed (no body, an idempotent method) goes on to
// the next holder when one cannot be reached.
func (r *Relay) viaPeer(holders []string, id string, out *http.Request, upgrade bool) (*http.Response, error) {
	retryable := out.Body == nil && idempotent(out.Method)
	start := rand.IntN(len(holders))
	var errs []error
	for i := range holders {
		peer := holders[(start+i)%len(holders)]
		req := out.Clone(out.Context())
		req.URL.Scheme, req.URL.Host = "https", peer
		req.URL.Path = "/clusters/" + id + out.URL.Path
		if out.URL.RawPath != "" {
			req.URL.RawPath = "/clusters/" + id + out.URL.RawPath
		}
		req.Host = out.Host
		var resp *http.Response
		var err error
		r.stats.peerForwarded.Add(1)
		switch {
		case upgrade:
			resp, err = r.peers.upgrade(req, peer)
		case retryable:
			// As on a tunnel connection: a small answer is read whole, so
			// that a holder dying mid-answer costs no error.
			if resp, err = r.peers.h2.RoundTrip(req); err == nil {
				resp, err = whole(resp)
			}
		default:
			resp, err = r.peers.h2.RoundTrip(req)
		}
		if err == nil {
			return resp, nil
		}
		r.log.Warn("relay replica unreachable", "peer", peer, "cluster", id, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", peer, err))
		if !retryable || out.Context().Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w: %w", ErrPeerUnreachable, errors.Join(errs...))
}

// upgrade sends an upgrade request to a replica on a connection of its
// own, which becomes the upgraded connection's far end.
func (p *peers) upgrade(req *http.Request, peer string) (*http.Response, error) {
	t := p.tls.Clone()
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
	resp.Body = &upgradedBody{r: br, up: up}
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
		r.serveCluster(w, req, true)
	})
}

// holders returns the other replicas to forward a request for id to: only
// when this relay is one of a fleet, holds no connection for id itself,
// and the request did not come from a replica.
func (r *Relay) holders(id string, fromPeer bool) []string {
	if fromPeer || r.cfg.Directory == nil || r.reg.has(id) {
		return nil
	}
	return r.cfg.Directory.Holders(id)
}

var _ rawUpstream = peerConn{}
