package e2e

import (
	"crypto/tls"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// certificatesRotate rotates the relay's serving certificate to one of a
// new CA, as an operator rolls a CA with cert-manager, while kubectl
// reads through the client proxy and directly: the new CA is added to the
// CA file the agent, the client proxy and kubectl trust, the relay's
// certificate and key files are swapped for the new CA's, and later the
// old CA is removed. Nothing is restarted for it; no request fails; the
// relay serves the new certificate from the next handshake on; the
// agent's connections, made before, stay. Then the relay restarts, and
// the agent and the client proxy, trusting only the new CA now (their CA
// file read again), connect to it.
func certificatesRotate(t *testing.T, c *chain) {
	connected := func() int { return strings.Count(c.logs("relay"), `msg="agent connected"`) }
	before := connected()
	oldCA, err := os.ReadFile(c.relayCA)
	require.NoError(t, err)
	newCA, err := pki.NewCA("e2e relay CA, rotated")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(c.relayCA, append(oldCA, newCA.CertPEM()...), 0o600))

	token, err := c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: aliceUPN, OID: "oid-alice",
		Groups: []string{aliceGrp}, Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	clients := []*kubetest.Kubectl{c.kubectl(), c.caller(t, cluster, token)}
	var ok, failed atomic.Int32
	var failures sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		k := clients[i%2]
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := k.Run(ctx(t), nil, "get", "pods", "-n", ns, "-o", "name")
				if err != nil || res.ExitCode != 0 {
					failed.Add(1)
					failures.Store(res.Stderr, err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(2 * time.Second)
	leaf, err := newCA.Issue(pki.LeafOptions{CommonName: "relay, rotated", Hosts: pki.LoopbackHosts, Server: true})
	require.NoError(t, err)
	require.NoError(t, leaf.WriteFiles(c.relayCert+".new", c.relayKey+".new"))
	require.NoError(t, os.Rename(c.relayKey+".new", c.relayKey))
	require.NoError(t, os.Rename(c.relayCert+".new", c.relayCert))
	time.Sleep(4 * time.Second)
	require.NoError(t, os.WriteFile(c.relayCA, newCA.CertPEM(), 0o600)) // the old CA goes
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	failures.Range(func(k, v any) bool { t.Logf("failed: %v %s", v, k); return true })
	t.Logf("%d kubectl runs during the rotation, %d failed", ok.Load()+failed.Load(), failed.Load())
	assert.Zero(t, failed.Load())
	assert.Greater(t, ok.Load(), int32(8))

	conn, err := tls.Dial("tcp", c.relayAddr, &tls.Config{RootCAs: newCA.Pool()})
	require.NoError(t, err, "a new handshake gets the new certificate")
	assert.Equal(t, "relay, rotated", conn.ConnectionState().PeerCertificates[0].Subject.CommonName)
	conn.Close()
	assert.Equal(t, before, connected(), "the agent's connections stayed")

	c.relay.kill()
	c.relay = c.start("relay", c.relayArgs...) // a new log
	c.waitWorking(c.kubectl())
	assert.Positive(t, connected(), "the agent connected again, trusting the new CA alone")
}
