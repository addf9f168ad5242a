package relay_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// gate holds every handshake that reaches it until opened, and counts how
// many it held at once.
type gate struct {
	armed        atomic.Bool
	inside, most atomic.Int32
	open         chan struct{}
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) hold() {
	if !g.armed.Load() {
		return
	}
	n := g.inside.Add(1)
	for m := g.most.Load(); n > m && !g.most.CompareAndSwap(m, n); m = g.most.Load() {
	}
	<-g.open
	g.inside.Add(-1)
}

// dialMany makes 4 TLS handshakes with addr at once, lets them through
// once want of them are inside g, and returns the most that were.
func dialMany(t *testing.T, g *gate, addr string, cfg *tls.Config, want int32) int32 {
	t.Helper()
	done := make(chan error, 4)
	for range 4 {
		go func() {
			c, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				c.Close()
			}
			done <- err
		}()
	}
	require.Eventually(t, func() bool { return g.inside.Load() == want }, 10*time.Second, time.Millisecond)
	close(g.open)
	for range 4 {
		require.NoError(t, <-done)
	}
	return g.most.Load()
}

// The relay computes at most MaxHandshakes TLS handshakes at once on its
// listener, whatever its TLS config does at GetConfigForClient; Unlimited
// lifts the bound.
func TestRelayBoundsItsHandshakes(t *testing.T) {
	for _, tc := range []struct {
		max, want int32
	}{{1, 1}, {relay.Unlimited, 4}} {
		ca, err := pki.NewCA("handshakes test CA")
		require.NoError(t, err)
		leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
		require.NoError(t, err)
		cert, err := leaf.TLSCertificate()
		require.NoError(t, err)
		g := newGate()
		g.armed.Store(true)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv, err := relay.New(&relay.Config{Listener: ln, MaxHandshakes: int(tc.max),
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				g.hold()
				return nil, nil
			}},
			Agents: tunnel.SecretAuthenticator{"c": "s"}, InsecureSkipClientAuth: true})
		require.NoError(t, err)
		ctx, stop := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- srv.Run(ctx) }()

		most := dialMany(t, g, ln.Addr().String(), &tls.Config{RootCAs: ca.Pool()}, tc.want)
		assert.Equal(t, tc.want, most, "handshakes computed at once, MaxHandshakes %d", tc.max)
		stop()
		require.NoError(t, <-ran)
	}
}

// A fleet replica's peer listener is open to whoever reaches its port,
// and a handshake there is computed before the peer certificate is
// checked: it takes MaxHandshakes as the other listeners do.
func TestFleetPeerListenerBoundsItsHandshakes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	etcd, err := kubetest.StartEtcd(ctx, t.TempDir(), 1)
	kubetest.Require(t, err)
	t.Cleanup(etcd.Stop)

	for _, tc := range []struct {
		max, want int32
	}{{1, 1}, {relay.Unlimited, 4}} {
		ca, err := pki.NewCA("peer test CA")
		require.NoError(t, err)
		issue := func(name string, server bool) tls.Certificate {
			leaf, err := ca.Issue(pki.LeafOptions{CommonName: name, Hosts: pki.LoopbackHosts, Server: server, Client: true})
			require.NoError(t, err)
			cert, err := leaf.TLSCertificate()
			require.NoError(t, err)
			return cert
		}
		relayCert, peerCert := issue("relay", true), issue("relay-0", true)
		// The peer CA is asked for at each handshake of the peer
		// listener, after the wait for a place.
		g := newGate()
		peerLn, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv, err := relay.New(&relay.Config{Listen: "127.0.0.1:0", MaxHandshakes: int(tc.max),
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{relayCert}},
			Agents:    tunnel.SecretAuthenticator{"c": "s"}, InsecureSkipClientAuth: true,
			Fleet: &relay.FleetConfig{Etcd: clientv3.Config{Endpoints: etcd.Endpoints()}, ReplicaID: "relay-0",
				PeerListener: peerLn, PeerCertificate: &peerCert,
				GetPeerCA: func() *x509.CertPool { g.hold(); return ca.Pool() }},
		})
		require.NoError(t, err)
		rctx, stop := context.WithCancel(ctx)
		ran := make(chan error, 1)
		go func() { ran <- srv.Run(rctx) }()

		g.armed.Store(true)
		client := issue("relay-1", false)
		most := dialMany(t, g, peerLn.Addr().String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client}}, tc.want)
		assert.Equal(t, tc.want, most, "peer handshakes computed at once, MaxHandshakes %d", tc.max)
		stop()
		require.NoError(t, <-ran)
	}
}
