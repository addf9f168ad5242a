package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// peerDialProtocol is the Upgrade token with which a replica asks another
// for a raw stream to a cluster it holds (PROTOCOL.md, "Between replicas").
const peerDialProtocol = "clusterconnect-dial.v1"

// DialContext opens a raw stream to the cluster's agent and returns it as a
// net.Conn. On the agent the stream is served as an HTTP/1.1 connection by
// the agent's handler, so the caller speaks HTTP/1.1 on it (and may upgrade).
// In a fleet, a cluster whose agents are connected to another replica is
// reached through that replica, on a connection of the stream's own.
// ctx bounds opening the stream only, as with net.Dialer.
func (r *Relay) DialContext(ctx context.Context, clusterID string) (net.Conn, error) {
	s, err := r.openStream(ctx, clusterID, streamDial)
	if err == nil {
		return s, nil
	}
	if errors.Is(err, ErrNotConnected) {
		if holders := r.holders(clusterID, false, ""); len(holders) > 0 {
			return r.dialViaPeer(ctx, holders, clusterID)
		}
	}
	return nil, err
}

// dialViaPeer asks the replicas holding id, in turn, for a raw stream to
// it, and returns the first replica's connection once it has switched.
func (r *Relay) dialViaPeer(ctx context.Context, holders []string, id string) (net.Conn, error) {
	var errs []error
	order, start := r.orderHolders(id, holders)
	for i := range order {
		peer := order[(start+i)%len(order)]
		req := (&http.Request{
			Method: http.MethodGet, URL: &url.URL{Scheme: "https", Host: peer, Path: "/clusters/" + id + "/"}, Host: peer,
			Header: http.Header{"Connection": {"Upgrade"}, "Upgrade": {peerDialProtocol}},
		}).WithContext(ctx)
		r.stats.peerForwarded.Add(1)
		resp, err := r.peers.upgrade(req, peer)
		if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
			body := resp.Body.(*upgradedBody)
			return &bufferedConn{Conn: body.up.(peerConn).Conn, r: body.r}, nil
		}
		if err == nil {
			err = fmt.Errorf("the replica answered %s", resp.Status)
			resp.Body.Close()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		r.stats.peerUnreachable.Add(1)
		r.log.Warn("relay replica unreachable", "peer", peer, "cluster", id, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", peer, err))
	}
	return nil, fmt.Errorf("%w: %w", ErrPeerUnreachable, errors.Join(errs...))
}

// servePeerDial answers another replica's request for a raw stream to a
// cluster this one holds: a stream on one of the cluster's connections,
// spliced to the replica's connection after a 101.
func (r *Relay) servePeerDial(w http.ResponseWriter, req *http.Request) {
	id, _, ok := clusterPath(req.URL.EscapedPath())
	if !ok || req.ProtoMajor != 1 {
		httpx.WriteStatus(w, req, http.StatusBadRequest, "", "tunnel: a peer dial is an HTTP/1.1 upgrade under /clusters/{cluster-id}/")
		return
	}
	stream, err := r.openStream(req.Context(), id, streamDial)
	if err != nil {
		httpx.WriteStatus(w, req, http.StatusServiceUnavailable, id, err.Error())
		return
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		stream.Close()
		httpx.WriteStatus(w, req, http.StatusInternalServerError, id, "tunnel: the relay's peer server cannot hijack connections")
		return
	}
	defer conn.Close()
	buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + peerDialProtocol + "\r\n\r\n")
	if err := buf.Flush(); err != nil {
		stream.Close()
		return
	}
	splice(&bufferedConn{Conn: conn, r: buf.Reader}, &timedConn{Conn: conn, timeout: r.cfg.WriteTimeout}, stream, stream)
}
