package agent_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/agent"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// An agent with a key credential: it signs an assertion for each
// connection with its own key, which the relay knows by its public half.
// A caller's request reaches the API server as the caller, through
// impersonation. (Stand-ins play Entra ID and the API server, which says
// who a request is for.)
func ExampleAgent() {
	verifier, tokenOf, done := entraStandIn()
	defer done()
	apiserver := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s as %s", r.URL.Path, r.Header.Get("Impersonate-User"))
	}))
	defer apiserver.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	relay, front := relayKnowing("prod-eu", key.Public()) // a relay, as package relay runs one
	defer front.Close()

	a, err := agent.New(&agent.Config{
		RelayURL: front.URL, ClusterID: "prod-eu", RelayTLS: front.Client().Transport.(*http.Transport).TLSClientConfig,
		Credential: &agent.KeyFile{Path: writeKey(key), ClusterID: "prod-eu"},
		Verifier:   verifier,
		RESTConfig: &rest.Config{Host: apiserver.URL, TLSClientConfig: rest.TLSClientConfig{CAData: certPEM(apiserver)}},
	})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go a.Run(ctx)
	for !relay.Connected("prod-eu") {
		time.Sleep(10 * time.Millisecond)
	}

	req, _ := http.NewRequest(http.MethodGet, front.URL+"/clusters/prod-eu/api/v1/pods", nil)
	req.Header.Set("Authorization", "Bearer "+tokenOf("alice@contoso.com"))
	resp, err := front.Client().Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body))
	// Output: 200 OK /api/v1/pods as alice@contoso.com
}

// relayKnowing is a relay that knows a cluster by its agents' public key,
// and takes assertions that name it by its URL.
func relayKnowing(cluster string, key crypto.PublicKey) (*tunnel.Relay, *httptest.Server) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	aud, _ := tunnel.AssertionAudience("https://" + ln.Addr().String())
	auth, _ := tunnel.NewAssertionAuthenticator(tunnel.AssertionConfig{Audience: aud, Keys: map[string][]crypto.PublicKey{cluster: {key}}})
	relay, _ := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: auth})
	front := httptest.NewUnstartedServer(relay)
	front.Listener.Close()
	front.Listener = ln
	front.StartTLS()
	return relay, front
}

const tenant = "8f7e2a4c-1d3b-4e5f-9a8b-7c6d5e4f3a2b"

// entraStandIn plays Entra ID: a verifier for its tokens, and a token for
// a user.
func entraStandIn() (*tokens.Verifier, func(upn string) string, func()) {
	entra, _ := oidctest.Start()
	issuers, _ := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenant}, Audiences: []string{"api://demo"}, DiscoveryURL: entra.EntraDiscoveryURL})
	verifier, _ := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: entra.Client()})
	tokenOf := func(upn string) string {
		t, _ := entra.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: "api://demo", UPN: upn})
		return t
	}
	return verifier, tokenOf, entra.Close
}

func writeKey(key *ecdsa.PrivateKey) string {
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	path := filepath.Join(os.TempDir(), "clusterconnect-example-agent.key")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	return path
}

func certPEM(s *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}
