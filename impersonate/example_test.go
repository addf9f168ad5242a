package impersonate_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// The handler in front of an API server. Here the "API server" only shows
// which identity it was asked to act as; in a cluster, RESTConfig is left
// nil and the handler uses its pod's service account.
func ExampleHandler() {
	apiServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "user=%s groups=%s authorization=%q",
			r.Header.Get("Impersonate-User"), strings.Join(r.Header.Values("Impersonate-Group"), ","), r.Header.Get("Authorization"))
	}))
	defer apiServer.Close()

	entra, _ := oidctest.Start() // stand-in for Microsoft Entra ID
	defer entra.Close()
	const tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	issuers, _ := tokens.EntraIssuers(tokens.EntraConfig{
		TenantIDs: []string{tenant}, Audiences: []string{"api://clusterconnect"}, DiscoveryURL: entra.EntraDiscoveryURL,
	})
	verifier, _ := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: entra.Client()})

	h, err := impersonate.New(&impersonate.Config{
		RESTConfig: &rest.Config{
			Host:            apiServer.URL,
			BearerToken:     "handler-service-account-token",
			TLSClientConfig: rest.TLSClientConfig{Insecure: true}, // the demo server's certificate; never in production
		},
		Verifier: verifier,
		Mapping:  tokens.EntraMapping(),
	})
	if err != nil {
		panic(err)
	}
	front := httptest.NewServer(h)
	defer front.Close()

	bearer, _ := entra.EntraToken(oidctest.EntraClaims{
		Tenant: tenant, Audience: "api://clusterconnect", UPN: "alice@contoso.com", OID: "oid-1", Groups: []string{"group-oid-1"},
	})
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, front.URL+"/api/v1/namespaces", nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("X-Remote-Group", "system:masters") // removed, never trusted
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output:
	// user=alice@contoso.com groups=group-oid-1 authorization="Bearer handler-service-account-token"
}
