package relay

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/clusterconnect/clusterconnect/etcddir"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// DefaultPeerListen is where a fleet replica listens for other replicas.
const DefaultPeerListen = ":8444"

// FleetConfig makes a relay one replica of a fleet that shares a
// directory in etcd: which replica holds which cluster, and the agents'
// replay cache. Requests for a cluster held elsewhere go to a holder over
// mutual TLS between replicas.
type FleetConfig struct {
	// Etcd is how to reach etcd: Endpoints (required) and TLS. Zero
	// DialTimeout and keep-alive settings become 5 s; a nil Logger, none
	// (the directory logs what matters).
	Etcd clientv3.Config
	// Prefix is where the fleet's directory lives; default
	// etcddir.DefaultPrefix.
	Prefix string
	// LeaseTTL is how long a replica that died stays in the others'
	// directory; default etcddir.DefaultTTL.
	LeaseTTL time.Duration
	// ReplicaID names this replica in the fleet; default the host name.
	ReplicaID string
	// PeerListen is the address other replicas reach this one on; default
	// DefaultPeerListen. PeerListener, if set, is used instead.
	PeerListen   string
	PeerListener net.Listener
	// PeerAdvertise is the host:port other replicas dial for this one;
	// default the peer listener's address, which then needs a host.
	PeerAdvertise string
	// PeerCertificate is this replica's certificate, for the peer
	// listener and for dialing peers (server and client use), and PeerCA
	// the fleet's peer CA: only certificates it signed reach the peer
	// listener. Both required (PeerCertificate or GetPeerCertificate).
	PeerCertificate *tls.Certificate
	PeerCA          *x509.CertPool
	// GetPeerCA, if set, is asked for the fleet's peer CA at each
	// handshake (either way: dialing a replica, and a replica dialing
	// this one's peer listener) instead of using PeerCA, so that a CA
	// bundle rotated on disk is used from the next connection on.
	GetPeerCA func() *x509.CertPool
	// GetPeerCertificate, if set, is asked for the peer certificate at
	// each handshake instead of using PeerCertificate, so that one
	// rotated on disk is used from the next handshake on (connections
	// made before keep theirs).
	GetPeerCertificate func() *tls.Certificate
}

// fleet is what a replica runs besides the relay.
type fleet struct {
	id        string
	advertise string
	etcd      *clientv3.Client
	dir       *etcddir.Directory
	clientTLS *tls.Config           // for dialing peers
	serverTLS *tls.Config           // for the peer listener
	peerCA    func() *x509.CertPool // FleetConfig.GetPeerCA
	ln        net.Listener
}

// newFleet connects to etcd and opens the peer listener.
func newFleet(c *FleetConfig, log *slog.Logger) (f *fleet, err error) {
	if len(c.Etcd.Endpoints) == 0 {
		return nil, errors.New("relay: a fleet needs etcd endpoints")
	}
	if (c.PeerCertificate == nil && c.GetPeerCertificate == nil) || (c.PeerCA == nil && c.GetPeerCA == nil) {
		return nil, errors.New("relay: a fleet replica needs a peer certificate and the fleet's peer CA")
	}
	cert := c.GetPeerCertificate
	if cert == nil {
		cert = func() *tls.Certificate { return c.PeerCertificate }
	}
	f = &fleet{id: c.ReplicaID, ln: c.PeerListener,
		clientTLS: &tls.Config{GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert(), nil },
			RootCAs: c.PeerCA, MinVersion: tls.VersionTLS13},
		serverTLS: &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert(), nil },
			ClientCAs: c.PeerCA, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}},
		peerCA: c.GetPeerCA,
	}
	if ca := c.GetPeerCA; ca != nil {
		f.clientTLS.RootCAs = ca()
		f.serverTLS.ClientCAs = ca()
		server := f.serverTLS.Clone()
		f.serverTLS.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := server.Clone()
			c.ClientCAs = ca()
			return c, nil
		}
	}
	if f.id == "" {
		if f.id, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("relay: no replica ID and no host name: %w", err)
		}
	}
	listen := cmp.Or(c.PeerListen, DefaultPeerListen)
	if f.ln == nil {
		if f.ln, err = net.Listen("tcp", listen); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				f.ln.Close()
			}
		}()
	}
	if f.advertise = c.PeerAdvertise; f.advertise == "" {
		host, _, _ := net.SplitHostPort(listen)
		if c.PeerListener == nil && (host == "" || net.ParseIP(host).IsUnspecified()) {
			return nil, errors.New("relay: a peer address to advertise is required when the peer listener has no host")
		}
		f.advertise = f.ln.Addr().String()
	}
	ec := c.Etcd
	ec.DialTimeout = cmp.Or(ec.DialTimeout, 5*time.Second)
	ec.DialKeepAliveTime = cmp.Or(ec.DialKeepAliveTime, 5*time.Second)
	ec.DialKeepAliveTimeout = cmp.Or(ec.DialKeepAliveTimeout, 5*time.Second)
	if ec.Logger == nil {
		ec.Logger = zap.NewNop()
	}
	if f.etcd, err = clientv3.New(ec); err != nil {
		return nil, fmt.Errorf("relay: etcd: %w", err)
	}
	f.dir, err = etcddir.New(&etcddir.Config{Client: f.etcd, Prefix: c.Prefix, ReplicaID: f.id, PeerAddr: f.advertise, TTL: c.LeaseTTL, Logger: log})
	if err != nil {
		f.etcd.Close()
		return nil, err
	}
	return f, nil
}

// serve keeps the replica in the directory and serves other replicas
// until ctx ends; then the directory entry goes (the lease is revoked), so
// the others stop sending requests here, and left is closed. The peer
// listener is bounded as the clients' is (bound: connections at once,
// TLS handshakes computed at once): TLS turns away anyone without a peer
// certificate, but only after a handshake, which the peer port computes
// for whoever reaches it.
func (f *fleet) serve(ctx context.Context, relay *tunnel.Relay, bound tunnel.ClientListenerConfig, log *slog.Logger) (left <-chan struct{}, err error) {
	srv := &http.Server{Handler: relay.PeerHandler(), TLSConfig: tunnel.LimitHandshakes(f.serverTLS), ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 90 * time.Second, MaxHeaderBytes: tunnel.DefaultMaxHeaderBytes}
	// As on the clients' listener: each answer's headers leave with its
	// body.
	if err := tunnel.ConfigureServer(srv); err != nil {
		return nil, fmt.Errorf("relay: peer listener: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.dir.Run(ctx)
		f.etcd.Close()
	}()
	go func() {
		ln := tunnel.ClientListener(f.ln, bound)
		if err := httpx.ServeUntil(ctx, srv, ln, 10*time.Second); err != nil {
			log.Error("peer listener failed", "err", err)
		}
	}()
	return done, nil
}

// close releases what newFleet took, for a server that never ran.
func (f *fleet) close() {
	f.ln.Close()
	f.etcd.Close()
}
