package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clusterconnect/clusterconnect/etcddir"
	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
	"github.com/clusterconnect/clusterconnect/internal/tlsfile"
	"github.com/clusterconnect/clusterconnect/relay"
)

// fleetFlags make the relay one replica of a fleet that shares a
// directory in etcd. Without -etcd-endpoints the relay is alone.
type fleetFlags struct {
	endpoints, etcdCA, etcdCert, etcdKey string
	peerCert, peerKey, peerCA            string
	cfg                                  relay.FleetConfig
}

func registerFleet(fs *flag.FlagSet) *fleetFlags {
	f := &fleetFlags{}
	fs.StringVar(&f.endpoints, "etcd-endpoints", "", "comma-separated etcd client URLs: run as one replica of a fleet sharing a directory there (default: a relay alone)")
	fs.StringVar(&f.etcdCA, "etcd-ca", "", "CA file for etcd's certificate (https endpoints)")
	fs.StringVar(&f.etcdCert, "etcd-cert", "", "client certificate file for etcd")
	fs.StringVar(&f.etcdKey, "etcd-key", "", "client key file for etcd")
	fs.StringVar(&f.cfg.Prefix, "etcd-prefix", etcddir.DefaultPrefix, "where the fleet's directory lives in etcd")
	fs.DurationVar(&f.cfg.LeaseTTL, "etcd-lease-ttl", etcddir.DefaultTTL, "how long a replica that died stays in the others' directory")
	fs.StringVar(&f.cfg.ReplicaID, "replica-id", "", "this replica's name in the fleet (default: the host name)")
	fs.StringVar(&f.cfg.PeerListen, "peer-listen", relay.DefaultPeerListen, "address other replicas reach this one on (mutual TLS)")
	fs.StringVar(&f.cfg.PeerAdvertise, "peer-advertise", "", "host:port other replicas dial for this one (default: -peer-listen, which then needs a host)")
	fs.StringVar(&f.peerCert, "peer-cert", "", "this replica's certificate for the peer listener and for dialing peers (server and client use), read again when it or -peer-key changes")
	fs.StringVar(&f.peerKey, "peer-key", "", "its key")
	fs.StringVar(&f.peerCA, "peer-ca", "", "the fleet's peer CA (one or more PEM certificates): only certificates it signed may reach the peer listener, or be reached as peers; read again when it changes, so a CA can be rotated by listing old and new, then the new alone")
	return f
}

// config is the fleet the flags describe; nil without -etcd-endpoints.
func (f *fleetFlags) config() (*relay.FleetConfig, error) {
	if f.endpoints == "" {
		return nil, nil
	}
	if f.peerCert == "" || f.peerKey == "" || f.peerCA == "" {
		return nil, fmt.Errorf("a fleet replica needs -peer-cert, -peer-key and -peer-ca")
	}
	pair, err := tlsfile.NewKeyPair(f.peerCert, f.peerKey) // read again when rotated
	if err != nil {
		return nil, fmt.Errorf("-peer-cert/-peer-key: %w", err)
	}
	c := f.cfg
	c.GetPeerCertificate = pair.Certificate
	ca, err := tlsfile.NewRoots(f.peerCA) // read again when rotated
	if err != nil {
		return nil, fmt.Errorf("-peer-ca: %w", err)
	}
	c.GetPeerCA = ca.Pool
	c.Etcd = clientv3.Config{Endpoints: strings.Split(f.endpoints, ",")} // relay fills in the timeouts
	if c.Etcd.TLS, err = f.etcdTLS(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (f *fleetFlags) etcdTLS() (*tls.Config, error) {
	if f.etcdCA == "" && f.etcdCert == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.etcdCA != "" {
		pool, err := cli.CertPool("etcd-ca", f.etcdCA)
		if err != nil {
			return nil, err
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
