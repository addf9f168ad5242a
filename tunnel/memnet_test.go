package tunnel_test

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"testing"
	"testing/synctest"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/memnet"
	"github.com/clusterconnect/clusterconnect/tunnel"
	"github.com/stretchr/testify/require"
)

// memHarness is a relay and an agent on a memnet.Net, to be made and used
// inside a synctest bubble.
type memHarness struct {
	t     *testing.T
	net   *memnet.Net
	relay *tunnel.Relay
	agent *tunnel.Agent
	roots *x509.CertPool
	srv   *http.Server
	stop  context.CancelFunc
	done  chan struct{}
}

const memRelay = "relay.test:443"

// newMemHarness starts a relay serving on the in-memory network, and an
// agent connected to it, with the configs' defaults unless the funcs
// change them; everything stops when the bubble's test ends.
func newMemHarness(t *testing.T, handler http.Handler, relayCfg func(*tunnel.RelayConfig), agentCfg func(*tunnel.AgentConfig)) *memHarness {
	t.Helper()
	ca, err := pki.NewCA("mem test CA")
	require.NoError(t, err)
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: []string{"relay.test"}, Server: true})
	require.NoError(t, err)
	cert, err := leaf.TLSCertificate()
	require.NoError(t, err)
	h := &memHarness{t: t, net: memnet.New(), roots: ca.Pool(), done: make(chan struct{})}
	rc := &tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{clusterID: secret}, Logger: testLogger(t)}
	if relayCfg != nil {
		relayCfg(rc)
	}
	h.relay, err = tunnel.NewRelay(rc)
	require.NoError(t, err)
	h.srv = &http.Server{Handler: h.relay, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ErrorLog: quietLog}
	require.NoError(t, tunnel.ConfigureServer(h.srv))
	ln := h.net.Listen(memRelay)
	go h.srv.ServeTLS(ln, "", "")

	ac := &tunnel.AgentConfig{RelayURL: "https://" + memRelay, ClusterID: clusterID, Credential: tunnel.SecretCredential(secret),
		Handler: handler, TLSConfig: &tls.Config{RootCAs: h.roots}, Proxy: func(*http.Request) (*url.URL, error) { return nil, nil },
		DialContext: h.net.DialAs("agent"), Logger: testLogger(t)}
	if agentCfg != nil {
		agentCfg(ac)
	}
	h.agent, err = tunnel.NewAgent(ac)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() { defer close(h.done); h.agent.Run(ctx) }()
	t.Cleanup(h.close)
	// Held writes (hold.For) need the clock to move: wait in small steps
	// of fake time for every connection the agent keeps.
	want := cmp.Or(ac.Connections, tunnel.DefaultConnections)
	for start := time.Now(); len(h.relay.Conns()) < want; time.Sleep(time.Millisecond) {
		require.Less(t, time.Since(start), time.Minute, "the agent never connected")
	}
	return h
}

func (h *memHarness) close() {
	h.stop()
	<-h.done
	h.relay.Close()
	h.srv.Close()
	synctest.Wait()
}

// client is an HTTP/2 client of the relay on the in-memory network.
func (h *memHarness) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: h.net.Dial, TLSClientConfig: &tls.Config{RootCAs: h.roots}, ForceAttemptHTTP2: true,
	}}
}

func (h *memHarness) url(path string) string {
	return "https://" + memRelay + "/clusters/" + clusterID + path
}
