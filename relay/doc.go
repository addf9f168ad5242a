// Package relay assembles the public side of clusterconnect: a
// tunnel.Relay behind hardened listeners, with agents and callers
// authenticated from files it re-reads while running, optionally one
// replica of a fleet sharing a directory in etcd, with metrics, health
// endpoints and a drain when it stops. It is what the relay binary runs;
// an importer gets the same in a few lines:
//
//	srv, err := relay.New(&relay.Config{
//		TLSConfig:  &tls.Config{Certificates: []tls.Certificate{cert}},
//		AgentsFile: "agents.json", PublicURL: "https://relay.example.com",
//		PolicyFile: "policy.json", Verifier: verifier,
//	})
//	…
//	err = srv.Run(ctx) // until ctx ends, then drains
//
// # Agents
//
// Agents prove their cluster with a shared secret or with assertions
// signed by their own key (tunnel.AssertionCredential). The agents file
// (AgentList) names each cluster's secret or public keys; Agents puts a
// list in force, and Config.AgentsFile has the Server re-read the file
// every Config.ReloadInterval, so clusters are added and removed, and
// secrets and keys rotated, without a restart. Connections already
// accepted stay.
//
// # Callers
//
// Every request under /clusters/{id}/ passes the front door first
// (package access): the caller's token is verified, the cluster's rule in
// the access policy applied, and the caller's and the cluster's limits
// counted. Config.PolicyFile is re-read like the agents file;
// Config.Callers takes an authorizer made in code.
//
// # Listeners
//
// Each listener, a fleet's peer listener among them, bounds the
// connections it holds before a request is read (Config.MaxClientConns)
// and the TLS handshakes it computes at once (Config.MaxHandshakes, half
// the cores), resets a connection whose client stopped reading
// (Config.Tunnel.WriteTimeout, also TCP_USER_TIMEOUT), bounds request
// headers and the time to send them, and keeps idle connections 90 s at
// most. With Config.AgentListen agents have a listener of their own, so
// that callers who fill the clients' places cannot keep agents from
// reconnecting.
//
// # Fleet
//
// With Config.Fleet the relay registers in etcd which clusters it holds
// (package etcddir), forwards requests for clusters held elsewhere to a
// holder over mutual TLS, and shares the agents' replay cache with the
// other replicas. When Run's context ends the replica leaves the
// directory first, then asks its agents to move to another replica.
package relay
