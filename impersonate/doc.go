// Package impersonate is the token-to-impersonation http.Handler that sits
// in front of a kube-apiserver (the kube-aad-proxy role of Azure Arc cluster
// connect).
//
// For each request the [Handler] verifies the caller's bearer token with
// package tokens, maps it to a Kubernetes identity, removes every
// credential the client sent (Authorization, every Impersonate-* header in
// any spelling, the front-proxy headers X-Remote-User, -Group and
// -Extra-*, forwarding headers, WebSocket bearer subprotocols, and every
// request trailer), and forwards the request with its own credentials and
// Impersonate-User, -Uid, -Group and -Extra-* set from the token. The API
// server's RBAC then decides. Headers are set after ReverseProxy has
// removed hop-by-hop headers, so a client naming them in Connection cannot
// remove them, and a request without an identity is never sent.
//
// A request that asks for impersonation itself (kubectl --as) is refused
// with 403 unless [Config.AllowNestedImpersonation] is on, and an identity
// with more groups or header bytes than [Config.MaxGroups] and
// [Config.MaxIdentityBytes] allow is refused whole, never cut short.
//
//	v, _ := tokens.NewVerifier(&tokens.Config{Issuers: issuers})
//	h, err := impersonate.New(&impersonate.Config{
//		Verifier: v,
//		Mapping:  tokens.EntraMapping(),
//	}) // RESTConfig nil: the pod's in-cluster service account
//
// Ordinary requests go to the API server over HTTP/2, on the project's
// own HTTP/2 client with client-go's credentials around it (client-go's
// transport where the RESTConfig asks for what only it does: a proxy, a
// credential plugin, client certificate files; or where the API server
// does not offer HTTP/2); watches and logs -f are flushed as they arrive;
// exec, attach and port-forward (SPDY or WebSocket) go over client-go's
// HTTP/1.1 transport and are spliced through.
//
// The handler's own identity needs only the impersonate verb: on users and
// groups, on uids in authentication.k8s.io, and on userextras/<key> in
// authentication.k8s.io for each extra key the mapping sets (RBAC has no
// wildcard for one resource's subresources), plus create on
// subjectaccessreviews if nested impersonation is on.
package impersonate
