package tunnel_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// A relay, an agent that dials out to it, and a client request that reaches
// the agent's handler through the tunnel.
func Example() {
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{
		Authenticator: tunnel.SecretAuthenticator{"demo": "s3cret"},
	})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewTLSServer(relay) // a real relay: http.Server with ListenAndServeTLS
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
		RelayURL:   srv.URL, // the agent endpoint defaults to /tunnel/v1/connect
		ClusterID:  "demo",
		Credential: tunnel.SecretCredential("s3cret"),
		TLSConfig:  &tls.Config{RootCAs: roots},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from the agent: %s %s", r.Method, r.URL.Path)
		}),
	})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { agent.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for !relay.Connected("demo") {
		time.Sleep(10 * time.Millisecond)
	}

	resp, err := srv.Client().Get(srv.URL + "/clusters/demo/api/v1/namespaces")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status)
	fmt.Println(string(body))
	// Output:
	// 200 OK
	// hello from the agent: GET /api/v1/namespaces
}

// Agents can prove their identity with a key of their own instead of a
// shared secret: the relay holds only the public key.
func ExampleAssertionAuthenticator() {
	agentKey := mustECKey() // generated and kept by the agent
	// Both sides name the relay by its public URL; an agent's Agent does
	// this from its RelayURL when Audience is left empty.
	relayName, _ := tunnel.AssertionAudience("https://relay.example.com")
	auth, err := tunnel.NewAssertionAuthenticator(tunnel.AssertionConfig{
		Keys:     map[string][]crypto.PublicKey{"prod-eu": {agentKey.Public()}},
		Audience: relayName,
	})
	if err != nil {
		panic(err)
	}
	cred := &tunnel.AssertionCredential{ClusterID: "prod-eu", Key: agentKey, Audience: relayName}
	token, _ := cred.Credential(context.Background())

	fmt.Println(auth.Authenticate(context.Background(), "prod-eu", token))
	fmt.Println(auth.Authenticate(context.Background(), "prod-eu", token))
	fmt.Println(auth.Authenticate(context.Background(), "prod-us", token))
	// Output:
	// <nil>
	// tunnel: agent credential rejected (replayed): this assertion was already used
	// tunnel: agent credential rejected: unknown-cluster
}

func mustECKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}
