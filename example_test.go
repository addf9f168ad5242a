package clusterconnect_test

import (
	"context"
	"crypto/tls"

	"github.com/clusterconnect/clusterconnect/agent"
	"github.com/clusterconnect/clusterconnect/kubeconfig"
	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/login"
)

// The three places the packages run, as the README shows them, each what
// the matching example binary runs. It compiles with every change (it has
// no Output, so it is not run: it would listen on :8443 and reach Entra
// ID). Each package has runnable examples of its own.
func Example() {
	ctx := context.Background()
	const tenantID, serverAppID = "72f988bf-86f1-41af-91ab-2d7cd011db47", "api://clusterconnect"
	issuers, _ := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenantID}, Audiences: []string{serverAppID}})
	verifier, _ := tokens.NewVerifier(&tokens.Config{Issuers: issuers})

	// On the public side: the relay, its agents and access policy in
	// files it re-reads.
	cert, _ := tls.LoadX509KeyPair("relay.crt", "relay.key")
	srv, _ := relay.New(&relay.Config{
		TLSConfig:  &tls.Config{Certificates: []tls.Certificate{cert}},
		AgentsFile: "agents.json", PublicURL: "https://relay.example.com",
		PolicyFile: "policy.json", Verifier: verifier,
	})
	go srv.Run(ctx)

	// In the cluster: the agent dials out and serves impersonation.
	a, _ := agent.New(&agent.Config{
		RelayURL: "https://relay.example.com", ClusterID: "prod-eu",
		Credential: &agent.KeyFile{Path: "/etc/clusterconnect/agent.key", ClusterID: "prod-eu"},
		Verifier:   verifier, // in-cluster credentials for the API server
	})
	go a.Run(ctx)

	// On the user's machine: sign-in, the client proxy and its
	// kubeconfig entry.
	src, _ := (&login.Options{Mode: "devicecode", ServerID: serverAppID, TenantID: tenantID}).TokenSource()
	p, _ := clientproxy.New(&clientproxy.Config{RelayURL: "https://relay.example.com", ClusterID: "prod-eu", TokenSource: src})
	kubeconfig.Merge(kubeconfig.Options{SetCurrentContext: true}, kubeconfig.ProxyEntry("prod-eu", 0, p.CAPEM()))
	p.ListenAndServe(ctx)
}
