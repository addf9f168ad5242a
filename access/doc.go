// Package access is the relay's front door: it decides, for every client
// request, whether it may reach the cluster it is for, before anything of
// it enters a tunnel.
//
// An Authorizer is a tunnel.ClientAuthorizer. For each request under
// /clusters/{id}/ it
//
//  1. takes the bearer token (none: 401),
//  2. verifies it with package tokens — issuer, audience, tenant,
//     signature, lifetime — through the same cached verifier the agents use
//     (a token that fails: 401, saying why; the reason concerns the token
//     only, never the cluster),
//  3. checks the cluster's rule in the Policy: allowed issuers and tenants
//     and, if listed, users, groups or apps by object ID (not allowed, or
//     no such cluster: the same 403, naming no cluster, so a caller cannot
//     tell unknown, forbidden and disconnected clusters apart),
//  4. where the cluster's StepUp rules cover the request (an exec, a
//     write to Secrets: ParseAPIRequest reads it as kube-apiserver
//     would), checks that the token carries their authentication context
//     (not: 401 with a claims challenge, which the client proxy and the
//     exec plugin meet by signing the person in again),
//  5. counts the request against the caller's and the cluster's limits on
//     concurrent requests and on rate (over: 429 with Retry-After, which
//     kubectl honours).
//
// Only then does the relay look the cluster up and open a stream, and the
// cluster's side verifies the token again (package impersonate): the
// relay's check is defense in depth, never instead.
//
// A cluster may be marked PassThroughUnverified to receive tokens the
// relay cannot verify (its own service-account tokens); the agent must then
// pass them to the API server, which authenticates them.
//
// Authorizer.ClustersHandler lists, to a verified caller, the clusters it
// may reach and nothing of the others; Authorizer.ChallengeHandler gives
// an exec credential plugin the claims challenge its caller got last.
//
// # Sessions
//
// A long-lived request (a watch, logs -f, exec, attach, port-forward) is
// kept with what admitted it, and ends with its caller's right to it: when
// a new policy no longer admits its caller (Authorizer.SetPolicy), when the
// relay ends its cluster (Authorizer.EndCluster), and, where the cluster's
// SessionExpiry says so, when its token expires, unless its client
// presented a fresh token of the same caller (Authorizer.RenewHandler,
// HeaderSessionKey).
//
// Cost per request: a verify-cache hit costs a SHA-256 HMAC of the token
// and a map lookup; a miss costs parsing and one signature check (see
// BENCHMARKS.md). Tokens that cannot verify are not cached as good, so a
// flood of garbage tokens costs a parse each and never reaches a tunnel.
package access
