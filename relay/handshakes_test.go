package relay_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

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
		var inside, most atomic.Int32
		gate := make(chan struct{})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv, err := relay.New(&relay.Config{Listener: ln, MaxHandshakes: int(tc.max),
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				n := inside.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				<-gate
				inside.Add(-1)
				return nil, nil
			}},
			Agents: tunnel.SecretAuthenticator{"c": "s"}, InsecureSkipClientAuth: true})
		require.NoError(t, err)
		ctx, stop := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- srv.Run(ctx) }()

		done := make(chan error, 4)
		for range 4 {
			go func() {
				c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool()})
				if err == nil {
					c.Close()
				}
				done <- err
			}()
		}
		require.Eventually(t, func() bool { return inside.Load() == tc.want }, 10*time.Second, time.Millisecond)
		close(gate)
		for range 4 {
			require.NoError(t, <-done)
		}
		assert.Equal(t, tc.want, most.Load(), "handshakes computed at once, MaxHandshakes %d", tc.max)
		stop()
		require.NoError(t, <-ran)
	}
}
