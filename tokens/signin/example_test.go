package signin_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tokens/signin"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// A service principal signs in with its client secret, and a cache on
// disk spares the next process a second sign-in. The Entra ID stand-in
// plays login.microsoftonline.com; in production AuthorityHost and
// HTTPClient are left out.
func ExampleClientSecret() {
	entra, _ := oidctest.Start() // the stand-in
	defer entra.Close()
	const tenantID, clientID = "72f988bf-86f1-41af-91ab-2d7cd011db47", "5f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"
	entra.AddApp(oidctest.App{ClientID: clientID, Tenant: tenantID, Secret: "s3cret"})

	flow := &signin.ClientSecret{
		Config: signin.Config{
			TenantID: tenantID, ClientID: clientID,
			Scopes:        []string{signin.ServerScope("api://clusterconnect-server")},
			AuthorityHost: entra.AuthorityHost(), HTTPClient: entra.Client(), // only for the stand-in
		},
		Secret: "s3cret",
	}
	dir, _ := os.MkdirTemp("", "tokens")
	defer os.RemoveAll(dir)
	cache := &source.DiskCache{Dir: filepath.Join(dir, "cache")}

	for range 3 { // as three kubectl calls would, each its own process
		tok, err := cache.TokenSource(flow.CacheKey(), flow).Token()
		if err != nil {
			fmt.Println(err)
			return
		}
		_ = tok.AccessToken // sent as "Authorization: Bearer …"
	}
	fmt.Println("sign-ins:", entra.TokenRequests("client_credentials"))

	flow.Secret = "guess"
	_, err := flow.Fetch(context.Background(), nil)
	fmt.Println(errors.Is(err, signin.ErrInvalidClient))
	// Output:
	// sign-ins: 1
	// true
}
