// Package tunnel is the reverse HTTP/2 tunnel between an agent inside a
// firewalled network and a relay outside it.
//
// The agent dials out to the relay over TLS and upgrades the connection with
// an HTTP/1.1 handshake that carries its cluster ID and a credential; the
// connection then carries HTTP/2 with the roles reversed, so the relay sends
// requests (and raw byte streams for upgrades such as kubectl exec) down a
// connection the agent opened. The package moves HTTP and bytes; it knows
// nothing of Kubernetes or tokens.
//
// The package is being built: its API is not yet available.
package tunnel
