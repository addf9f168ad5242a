package relay_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// A relay with its front door: agents from a list made in code, callers'
// Entra ID tokens verified and held to an access policy. An agent
// connects; a caller with a token of the allowed group gets through, a
// caller without one does not.
func ExampleServer() {
	verifier, tokenOf, done := entraStandIn() // Entra ID's part
	defer done()
	policy := &access.Policy{Clusters: map[string]access.Cluster{"prod-eu": {Groups: []string{opsGroup}}}}
	callers, _ := access.New(&access.Config{Verifier: verifier, Policy: policy})
	agents, _ := relay.NewAgents(relay.AgentsConfig{})
	agents.Set(&relay.AgentList{Clusters: map[string]relay.AgentEntry{"prod-eu": {Secret: "a long random secret"}}})
	cert, roots := demoCertificate()
	srv, err := relay.New(&relay.Config{Listen: "127.0.0.1:0", TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Agents: agents, Callers: callers})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error)
	go func() { ran <- srv.Run(ctx) }()
	url := "https://" + srv.Addr().String()

	agent, _ := tunnel.NewAgent(&tunnel.AgentConfig{RelayURL: url, ClusterID: "prod-eu", TLSConfig: &tls.Config{RootCAs: roots},
		Credential: tunnel.SecretCredential("a long random secret"), Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})})
	go agent.Run(ctx)
	for !srv.Relay().Connected("prod-eu") {
		time.Sleep(10 * time.Millisecond)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for _, token := range []string{tokenOf("alice", opsGroup), "not-a-token"} {
		req, _ := http.NewRequest(http.MethodGet, url+"/clusters/prod-eu/api", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			fmt.Println(resp.Status)
		}
	}
	stop()
	fmt.Println("stopped:", <-ran)
	// Output:
	// 200 OK
	// 401 Unauthorized
	// stopped: <nil>
}

// One replica of a fleet: the relay binary's configuration, read from
// files the relay re-reads while it runs, with the fleet's directory in
// etcd. Every replica runs the same with its own peer certificate.
func ExampleServer_fleet() {
	cert, _ := tls.LoadX509KeyPair("relay.crt", "relay.key")
	peerCert, _ := tls.LoadX509KeyPair("peer.crt", "peer.key")
	peerCA, _ := os.ReadFile("peer-ca.crt")
	peers := x509.NewCertPool()
	peers.AppendCertsFromPEM(peerCA)
	issuers, _ := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{"<tenant ID>"}, Audiences: []string{"<server app ID>"}})
	verifier, _ := tokens.NewVerifier(&tokens.Config{Issuers: issuers})

	srv, err := relay.New(&relay.Config{
		TLSConfig:  &tls.Config{Certificates: []tls.Certificate{cert}},
		AgentsFile: "agents.json", PublicURL: "https://relay.example.com",
		PolicyFile: "policy.json", Verifier: verifier,
		Fleet: &relay.FleetConfig{
			Etcd:            clientv3.Config{Endpoints: []string{"https://etcd-0:2379", "https://etcd-1:2379", "https://etcd-2:2379"}},
			PeerAdvertise:   "relay-0.relay-peers:8444",
			PeerCertificate: &peerCert, PeerCA: peers,
		},
		MetricsListen: ":9090",
	})
	if err != nil {
		panic(err)
	}
	srv.Run(context.Background()) // a signal's context in a binary: it drains when that ends
}

// demoCertificate is a serving certificate for 127.0.0.1 and a pool that
// trusts it.
func demoCertificate() (tls.Certificate, *x509.CertPool) {
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	defer ts.Close()
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	return ts.TLS.Certificates[0], roots
}

const tenant, opsGroup = "8f7e2a4c-1d3b-4e5f-9a8b-7c6d5e4f3a2b", "a1b2c3d4-0000-4000-8000-000000000001"

// entraStandIn plays Entra ID: a verifier for its tokens, and a token for
// a user in groups.
func entraStandIn() (*tokens.Verifier, func(oid string, groups ...string) string, func()) {
	entra, _ := oidctest.Start()
	issuers, _ := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenant}, Audiences: []string{"api://demo"}, DiscoveryURL: entra.EntraDiscoveryURL})
	verifier, _ := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: entra.Client()})
	tokenOf := func(oid string, groups ...string) string {
		t, _ := entra.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: "api://demo", OID: oid, Groups: groups})
		return t
	}
	return verifier, tokenOf, entra.Close
}
