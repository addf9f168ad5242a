// Package graph resolves Microsoft Entra ID's groups overage through
// Microsoft Graph: when a user is in more groups than fit in a token, the
// token says so instead of carrying them, and the cluster asks Graph
// (getMemberObjects, with its own app-only token) which groups the user is
// in. A [Resolver] is a [tokens.GroupResolver] for [tokens.Mapping].
//
//	src := source.Cached(source.FromFetcher(&signin.Federated{ // the agent's own credential
//		Config: signin.Config{TenantID: tenantID, ClientID: agentApp,
//			Scopes: []string{signin.ServerScope(graph.DefaultEndpoint)}},
//		Assertion: signin.TokenFile(os.Getenv("AZURE_FEDERATED_TOKEN_FILE")),
//	}), 0)
//	resolver, err := graph.New(&graph.Config{TokenSource: src})
//	mapping := tokens.EntraMapping()
//	mapping.GroupResolver = resolver
//
// Answers are cached per user for CacheTTL, lookups run at most
// MaxConcurrent at a time and within Timeout, throttling (429 with
// Retry-After) is waited out within that time, and anything else fails
// the lookup: the token is then refused, never admitted without its groups,
// unless the Mapping says otherwise.
package graph
