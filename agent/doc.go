// Package agent assembles the cluster's side of clusterconnect: a
// tunnel.Agent that dials out to the relay and serves every request that
// arrives with impersonate.Handler in front of the API server, with its
// credential, health and metrics endpoints, and a drain when it stops.
// It is what the agent binary runs:
//
//	a, err := agent.New(&agent.Config{
//		RelayURL:   "https://relay.example.com",
//		ClusterID:  "prod-eu",
//		Credential: &agent.KeyFile{Path: "/etc/clusterconnect/agent.key", ClusterID: "prod-eu"},
//		Verifier:   verifier, // tokens.NewVerifier for the server app's issuers and audiences
//	})
//	…
//	err = a.Run(ctx) // until ctx ends, then drains
//
// # Credentials
//
// The relay knows each cluster by a shared secret or by the public key
// its agents sign assertions with. SecretFile and KeyFile read theirs
// from a file at every connection attempt, so a rotated Secret mounted
// into the pod is used from the next connection on; any
// tunnel.Credential will do.
//
// # Requests
//
// Each request's bearer token is verified again on the cluster's side,
// whatever the relay did, mapped to a Kubernetes identity
// (Config.Mapping, Entra ID's by default), and sent to the API server as
// that identity through impersonation, with the agent's own credentials
// (Config.RESTConfig, the pod's service account by default). The API
// server's RBAC decides.
//
// # Sessions
//
// An exec, attach or port-forward opened through a client proxy rides on
// a session (package sessions/reattach): when its tunnel connection is
// lost the agent keeps it, and the API server's connection under it, for
// Config.Sessions.Grace, and the client proxy re-attaches it through any
// relay replica. Only the caller that opened a session, by issuer, tenant
// and object ID, can re-attach it.
//
// # Health
//
// With Config.HealthListen the agent serves /livez and /healthz, /readyz
// (ready once the issuers' keys are at hand) and its Prometheus metrics
// at /metrics.
package agent
