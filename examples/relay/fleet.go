package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/clusterconnect/clusterconnect/etcddir"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// fleetFlags make the relay one replica of a fleet that shares a
// directory in etcd. Without -etcd-endpoints the relay is alone.
type fleetFlags struct {
	endpoints, etcdCA, etcdCert, etcdKey string
	prefix                               string
	ttl                                  time.Duration
	replicaID                            string
	peerListen, peerAdvertise            string
	peerCert, peerKey, peerCA            string
}

func registerFleet(fs *flag.FlagSet) *fleetFlags {
	f := &fleetFlags{}
	fs.StringVar(&f.endpoints, "etcd-endpoints", "", "comma-separated etcd client URLs: run as one replica of a fleet sharing a directory there (default: a relay alone)")
	fs.StringVar(&f.etcdCA, "etcd-ca", "", "CA file for etcd's certificate (https endpoints)")
	fs.StringVar(&f.etcdCert, "etcd-cert", "", "client certificate file for etcd")
	fs.StringVar(&f.etcdKey, "etcd-key", "", "client key file for etcd")
	fs.StringVar(&f.prefix, "etcd-prefix", etcddir.DefaultPrefix, "where the fleet's directory lives in etcd")
	fs.DurationVar(&f.ttl, "etcd-lease-ttl", etcddir.DefaultTTL, "how long a replica that died stays in the others' directory")
	fs.StringVar(&f.replicaID, "replica-id", "", "this replica's name in the fleet (default: the host name)")
	fs.StringVar(&f.peerListen, "peer-listen", ":8444", "address other replicas reach this one on (mutual TLS)")
	fs.StringVar(&f.peerAdvertise, "peer-advertise", "", "host:port other replicas dial for this one (default: -peer-listen, which then needs a host)")
	fs.StringVar(&f.peerCert, "peer-cert", "", "this replica's certificate for the peer listener and for dialing peers (server and client use)")
	fs.StringVar(&f.peerKey, "peer-key", "", "its key")
	fs.StringVar(&f.peerCA, "peer-ca", "", "the fleet's peer CA: only certificates it signed may reach the peer listener")
	return f
}

// fleet is what a replica runs besides the relay.
type fleet struct {
	id        string // this replica's
	cli       *clientv3.Client
	dir       *etcddir.Directory
	clientTLS *tls.Config // for dialing peers
	serverTLS *tls.Config // for the peer listener
	ln        net.Listener
	log       *slog.Logger
}

// setup connects to etcd and opens the peer listener; nil without
// -etcd-endpoints.
func (f *fleetFlags) setup(log *slog.Logger) (*fleet, error) {
	if f.endpoints == "" {
		return nil, nil
	}
	if f.peerCert == "" || f.peerKey == "" || f.peerCA == "" {
		return nil, errors.New("a fleet replica needs -peer-cert, -peer-key and -peer-ca")
	}
	cert, err := tls.LoadX509KeyPair(f.peerCert, f.peerKey)
	if err != nil {
		return nil, fmt.Errorf("-peer-cert/-peer-key: %w", err)
	}
	peers, err := certPool(f.peerCA)
	if err != nil {
		return nil, fmt.Errorf("-peer-ca: %w", err)
	}
	id := f.replicaID
	if id == "" {
		if id, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("-replica-id not given and no host name: %w", err)
		}
	}
	ln, err := net.Listen("tcp", f.peerListen)
	if err != nil {
		return nil, err
	}
	advertise := f.peerAdvertise
	if advertise == "" {
		host, _, _ := net.SplitHostPort(f.peerListen)
		if host == "" || net.ParseIP(host).IsUnspecified() {
			ln.Close()
			return nil, errors.New("-peer-advertise is required when -peer-listen has no host")
		}
		advertise = ln.Addr().String()
	}
	etcdTLS, err := f.etcdTLS()
	if err != nil {
		ln.Close()
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: strings.Split(f.endpoints, ","), TLS: etcdTLS, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: 5 * time.Second,
		Logger: zap.NewNop(), // the directory logs what matters
	})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("etcd: %w", err)
	}
	dir, err := etcddir.New(&etcddir.Config{Client: cli, Prefix: f.prefix, ReplicaID: id, PeerAddr: advertise, TTL: f.ttl, Logger: log})
	if err != nil {
		cli.Close()
		ln.Close()
		return nil, err
	}
	log.Info("relay replica of a fleet", "replica", id, "peer", advertise, "etcd", f.endpoints)
	return &fleet{
		id: id, cli: cli, dir: dir, ln: ln, log: log,
		clientTLS: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: peers, MinVersion: tls.VersionTLS13},
		serverTLS: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: peers, ClientAuth: tls.RequireAndVerifyClientCert,
			MinVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}},
	}, nil
}

func (f *fleetFlags) etcdTLS() (*tls.Config, error) {
	if f.etcdCA == "" && f.etcdCert == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.etcdCA != "" {
		pool, err := certPool(f.etcdCA)
		if err != nil {
			return nil, fmt.Errorf("-etcd-ca: %w", err)
		}
		t.RootCAs = pool
	}
	if f.etcdCert != "" {
		c, err := tls.LoadX509KeyPair(f.etcdCert, f.etcdKey)
		if err != nil {
			return nil, fmt.Errorf("-etcd-cert/-etcd-key: %w", err)
		}
		t.Certificates = []tls.Certificate{c}
	}
	return t, nil
}

func certPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no certificate in " + file)
	}
	return pool, nil
}

// serve keeps the replica in the directory and serves other replicas
// until ctx ends; then the directory entry goes (the lease is revoked), so
// the others stop sending requests here. wait returns once it has. The
// peer listener takes at most maxConns connections at once: TLS turns
// away anyone without a peer certificate, but only after a handshake.
func (fl *fleet) serve(ctx context.Context, relay *tunnel.Relay, maxConns int) (wait func(), err error) {
	srv := &http.Server{Handler: relay.PeerHandler(), TLSConfig: fl.serverTLS, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 90 * time.Second, MaxHeaderBytes: tunnel.DefaultMaxHeaderBytes}
	// As on the clients' listener: each answer's headers leave with its
	// body.
	if err := tunnel.ConfigureServer(srv); err != nil {
		return nil, fmt.Errorf("peer listener: %w", err)
	}
	left := make(chan struct{})
	go func() {
		defer close(left)
		fl.dir.Run(ctx)
		fl.cli.Close()
	}()
	go func() {
		ln := tunnel.ClientListener(fl.ln, tunnel.ClientListenerConfig{MaxConns: maxConns})
		if err := httpx.ServeUntil(ctx, srv, ln, 10*time.Second); err != nil {
			fl.log.Error("peer listener failed", "err", err)
		}
	}()
	return func() { <-left }, nil
}
