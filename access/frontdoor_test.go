package access_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// A flood of 4,000 unauthenticated upgrade requests trickling chunked
// bodies — what used to hold every stream of a cluster — costs the tunnel
// nothing:
// each is refused before any stream, and the cluster's real user is
// served throughout.
func TestUnauthenticatedFloodNeverReachesTheTunnel(t *testing.T) {
	e := newEnv(t, `{"clusters": {"prod": {"groups": ["`+ops+`"]}}}`)
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{"prod": "s3cret"}, ClientAuthorizer: e.authz})
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(relay)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() { relay.Close(); srv.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
		RelayURL: srv.URL + tunnel.DefaultAgentPath, ClusterID: "prod", Credential: tunnel.SecretCredential("s3cret"),
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "served") }),
		TLSConfig: &tls.Config{RootCAs: roots, ServerName: "example.com"},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); agent.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return relay.Connected("prod") }, 10*time.Second, 5*time.Millisecond)

	const flood = 4000
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	refused := 0
	for i := range flood {
		c, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
		require.NoError(t, err)
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /clusters/prod/api/v1/namespaces/default/pods/p/exec HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"+
			"Authorization: Bearer garbage-%d\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n", i) // and the body never ends
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode == http.StatusUnauthorized {
			refused++
		}
	}
	assert.Equal(t, flood, refused)

	alice := e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}})
	client := srv.Client()
	for range 20 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/clusters/prod/api", nil)
		req.Header.Set("Authorization", "Bearer "+alice)
		resp, err := client.Do(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, "served", string(b))
	}
	st := relay.Stats()
	assert.EqualValues(t, 20, st.StreamsOpened, "only the real user's requests opened streams")
	assert.EqualValues(t, flood, st.ClientsRefused)
}
