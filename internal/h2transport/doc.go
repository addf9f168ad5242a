// Package h2transport sends requests to one HTTPS server over HTTP/2 on
// the project's own client (package h2client), opening connections as
// the server's stream limit and GOAWAYs call for.
//
// It is the agent side's way to kube-apiserver (package impersonate):
// net/http's HTTP/2 transport starts a goroutine to write every request,
// whose new stack grows as it encodes the header list, and indexes every
// field in HPACK's table, the request ID that is new in every request
// among them; the project's client writes a request on the caller's
// goroutine and never indexes the request ID, and takes 64 KiB DATA
// frames. The agent spent 6-16 % less CPU per small request and 9-16 %
// less per downloaded MB (BENCHMARKS.md, "The agent's requests to the API
// server on the project's HTTP/2 client").
//
// What it does not carry, the caller sends another way: upgrades
// (exec, attach, port-forward), which HTTP/2 cannot carry, are refused
// with ErrUpgrade, and a server that does not choose HTTP/2 in the TLS
// handshake with ErrNotHTTP2, from then on without dialing again.
package h2transport
