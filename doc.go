// Package clusterconnect reaches a Kubernetes API server that sits behind a
// firewall, from anywhere, with no inbound port open on the cluster's
// network: the "cluster connect" design of Azure Arc-enabled Kubernetes,
// built as importable Go packages with thin example binaries.
//
// An agent inside the cluster dials out to a relay and keeps a reverse
// HTTP/2 tunnel open. A client proxy on the user's machine serves a
// kubeconfig and forwards kubectl's requests, with the user's Microsoft Entra
// ID (or any OIDC) token, to the relay. The relay sends each request down the
// tunnel; on the cluster side a token-to-impersonation handler validates the
// token and forwards the request to the kube-apiserver with Kubernetes user
// impersonation, so the API server's RBAC decides.
//
//	kubectl ──kubeconfig──▶ client proxy ──HTTPS + bearer──▶ relay ══reverse HTTP/2══▶ agent ──▶ impersonate.Handler ──impersonation──▶ kube-apiserver
//	(user's machine)        127.0.0.1:47011                  (public)   (agent dialed out)  (in cluster)  (validates token)     (agent's own creds)
//
// # Packages
//
//   - [github.com/clusterconnect/clusterconnect/relay],
//     [github.com/clusterconnect/clusterconnect/agent] and
//     [github.com/clusterconnect/clusterconnect/tokens/login]: the relay, the
//     agent and the user's sign-in as the example binaries run them.
//   - [github.com/clusterconnect/clusterconnect/tunnel]: the reverse HTTP/2
//     tunnel, agent and relay sides.
//   - [github.com/clusterconnect/clusterconnect/access] and
//     [github.com/clusterconnect/clusterconnect/etcddir]: the relay's front
//     door, and a fleet's directory in etcd.
//   - [github.com/clusterconnect/clusterconnect/tokens]: verification of Entra
//     ID and OIDC access tokens, claim-to-identity mapping, and client-side
//     token sources.
//   - [github.com/clusterconnect/clusterconnect/impersonate]: the
//     token-to-impersonation http.Handler in front of the kube-apiserver.
//   - [github.com/clusterconnect/clusterconnect/kubeconfig]: kubeconfig
//     generation and merging for the client side.
//
// Packages depend downward only: tunnel knows nothing of Kubernetes or tokens;
// impersonate and kubeconfig build on tokens; relay and agent assemble the
// rest.
package clusterconnect
