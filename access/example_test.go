package access_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// A relay whose front door lets one Entra group reach the cluster "prod".
// The issuer here is a local stand-in for Entra ID.
func Example() {
	entra, _ := oidctest.Start()
	defer entra.Close()
	const tenant, group = "72f988bf-86f1-41af-91ab-2d7cd011db47", "a1f4c7e2-0000-4000-8000-00000000000a"

	issuers, _ := tokens.EntraIssuers(tokens.EntraConfig{
		TenantIDs: []string{tenant}, Audiences: []string{"api://clusterconnect"},
		DiscoveryURL: entra.EntraDiscoveryURL, // only for the stand-in
	})
	verifier, _ := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: entra.Client()})
	policy, err := access.ParsePolicy([]byte(`{"clusters": {"prod": {"groups": ["` + group + `"]}}}`))
	if err != nil {
		panic(err)
	}
	frontDoor, err := access.New(&access.Config{Verifier: verifier, Policy: policy})
	if err != nil {
		panic(err)
	}
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{
		Authenticator:    tunnel.SecretAuthenticator{"prod": "agent secret"},
		ClientAuthorizer: frontDoor,
	})
	if err != nil {
		panic(err)
	}
	defer relay.Close()

	member, _ := entra.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: "api://clusterconnect", OID: "alice", Groups: []string{group}})
	stranger, _ := entra.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: "api://clusterconnect", OID: "mallory"})
	// The member is let through and told that no agent is connected
	// (503); the stranger is refused (403) in the words an unknown cluster
	// gets; without a token, 401.
	for _, tok := range []string{member, stranger, ""} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/clusters/prod/api/v1/pods", nil)
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		relay.ServeHTTP(w, r)
		fmt.Println(w.Code)
	}
	// Output:
	// 503
	// 403
	// 401
}

// A policy that asks for a stronger sign-in — the Conditional Access
// authentication context c1 — for an exec into "prod": a get passes with
// the member's plain token, an exec gets a claims challenge, and the same
// member's token that carries c1 (after signing in again) passes.
func ExampleStepUp() {
	entra, _ := oidctest.Start()
	defer entra.Close()
	const tenant, group = "72f988bf-86f1-41af-91ab-2d7cd011db47", "a1f4c7e2-0000-4000-8000-00000000000a"
	issuers, _ := tokens.EntraIssuers(tokens.EntraConfig{
		TenantIDs: []string{tenant}, Audiences: []string{"api://clusterconnect"},
		DiscoveryURL: entra.EntraDiscoveryURL, // only for the stand-in
	})
	verifier, _ := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: entra.Client()})
	policy, err := access.ParsePolicy([]byte(`{"clusters": {"prod": {"groups": ["` + group + `"],
		"stepUp": [{"authContext": "c1", "resources": ["pods/exec", "pods/attach", "pods/portforward"]}]}}}`))
	if err != nil {
		panic(err)
	}
	frontDoor, _ := access.New(&access.Config{Verifier: verifier, Policy: policy})

	plain, _ := entra.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: "api://clusterconnect", OID: "alice", Groups: []string{group}})
	stepped, _ := entra.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: "api://clusterconnect", OID: "alice", Groups: []string{group},
		Extra: map[string]any{"acrs": []string{"c1"}}})
	for _, try := range []struct{ method, path, token string }{
		{"GET", "/clusters/prod/api/v1/namespaces/web/pods", plain},
		{"POST", "/clusters/prod/api/v1/namespaces/web/pods/nginx/exec", plain},
		{"POST", "/clusters/prod/api/v1/namespaces/web/pods/nginx/exec", stepped},
	} {
		r := httptest.NewRequest(try.method, try.path, nil)
		r.Header.Set("Authorization", "Bearer "+try.token)
		release, err := frontDoor.AuthorizeClient(r, "prod")
		if err != nil {
			fmt.Println("refused:", err.(*tunnel.AccessError).Code, access.ClaimsChallenge("c1"))
			continue
		}
		release()
		fmt.Println("let through")
	}
	// Output:
	// let through
	// refused: 401 {"access_token":{"acrs":{"essential":true,"value":"c1"}}}
	// let through
}
