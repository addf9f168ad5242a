// Package signin gets the user's Microsoft Entra ID token without another
// CLI, in the login modes kubelogin offers, on golang.org/x/oauth2:
//
//   - [Browser]: a person signs in in this machine's browser
//     (authorization code with PKCE on a loopback redirect);
//   - [DeviceCode]: a person signs in on any browser with a code
//     (refresh tokens are used after both);
//   - [ClientSecret] and [ClientCertificate]: a service principal;
//   - [Federated]: workload identity federation, from a token file
//     ([TokenFile], AZURE_FEDERATED_TOKEN_FILE) or a GitHub Actions job's
//     OIDC token ([GitHubActions]);
//   - [ManagedIdentity]: an Azure machine's managed identity, from IMDS
//     or App Service's identity endpoint.
//
// Each is a [source.Fetcher]: put it behind a [source.DiskCache] so that
// every kubectl call, process and CI step reuses one sign-in until the
// token is about to expire:
//
//	flow := &signin.DeviceCode{Config: signin.Config{
//		TenantID: tenantID, ClientID: clientID,
//		Scopes: []string{signin.ServerScope("api://clusterconnect-server")},
//	}}
//	var cache source.DiskCache
//	src := cache.TokenSource(flow.CacheKey(), flow)
//
// # Errors
//
// A refusal from the token endpoint is an [*Error] with the server's code
// and words and a hint; it matches [ErrDeclined], [ErrCodeExpired],
// [ErrInvalidClient], [ErrUnknownClient] or [ErrInvalidScope] with
// errors.Is. Errors never contain a token, secret or assertion.
//
// Package [github.com/clusterconnect/clusterconnect/tokens/oidctest] has
// endpoints that behave like Entra's for tests.
//
// [source.Fetcher]: https://pkg.go.dev/github.com/clusterconnect/clusterconnect/tokens/source#Fetcher
// [source.DiskCache]: https://pkg.go.dev/github.com/clusterconnect/clusterconnect/tokens/source#DiskCache
package signin
