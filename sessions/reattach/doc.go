// Package reattach keeps a byte stream alive across the loss of the
// connection under it, so that kubectl exec, attach and port-forward go
// on when a relay replica, a tunnel connection or a network path goes.
//
// A session runs between a client (the client proxy, Dial) and a server
// (the agent, Server) over a carrier: any byte stream between them, for
// clusterconnect an HTTP/1.1 upgrade to Protocol through the relay. Each
// side keeps what it wrote until the other acknowledges it, at most
// Config.Window bytes; when the carrier is lost the client dials a new
// one, through any relay replica, and names the session and how much it
// has received; the server answers with how much it has, and each side
// sends again from there. Nothing is lost and nothing is read twice. A
// session not re-attached within Config.Grace is over, and both sides'
// reads and writes fail with ErrLost.
//
// A session ID is 128 random bits, and the server re-attaches a session
// only for the caller that opened it (ServerConfig.Identify). A session
// waiting for its carrier holds at most two windows of memory; how many
// may wait is bounded, in all and per caller (ServerConfig.MaxDetached).
// The frames are in tunnel/PROTOCOL.md, section 6.
package reattach
