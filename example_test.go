package clusterconnect_test

import (
	"context"
	"net/http"
	"time"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/kubeconfig"
	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/source"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// The three places the packages run, as the README shows them. It compiles
// with every change (it has no Output, so it is not run: it would listen
// on :443 and reach Entra ID).
func Example() {
	ctx := context.Background()
	const secret, tenantID, serverAppID = "a long random secret", "72f988bf-86f1-41af-91ab-2d7cd011db47", "api://clusterconnect"

	// On the public side: the relay is an http.Handler.
	relay, _ := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{"prod-eu": secret}})
	srv := &http.Server{Addr: ":443", Handler: relay, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: tunnel.DefaultMaxHeaderBytes}
	go srv.ListenAndServeTLS("relay.crt", "relay.key")

	// In the cluster: the agent dials out and serves the impersonation handler.
	issuers, _ := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenantID}, Audiences: []string{serverAppID}})
	verifier, _ := tokens.NewVerifier(&tokens.Config{Issuers: issuers})
	handler, _ := impersonate.New(&impersonate.Config{Verifier: verifier, Mapping: tokens.EntraMapping()}) // in-cluster credentials
	agent, _ := tunnel.NewAgent(&tunnel.AgentConfig{
		RelayURL: "https://relay.example.com", ClusterID: "prod-eu",
		Credential: tunnel.SecretCredential(secret), Handler: handler,
	})
	go agent.Run(ctx)

	// On the user's machine: the client proxy and its kubeconfig entry.
	src := source.Cached(&source.Command{Command: []string{
		"az", "account", "get-access-token", "--resource", serverAppID, "-o", "json"}}, 0)
	p, _ := clientproxy.New(&clientproxy.Config{RelayURL: "https://relay.example.com", ClusterID: "prod-eu", TokenSource: src})
	kubeconfig.Merge(kubeconfig.Options{SetCurrentContext: true}, kubeconfig.ProxyEntry("prod-eu", 0, p.CAPEM()))
	p.ListenAndServe(ctx)
}
