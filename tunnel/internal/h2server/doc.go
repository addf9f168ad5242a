// Package h2server is the agent's HTTP/2 server: it serves the requests a
// relay sends down a tunnel connection the agent dialed, with an
// http.Handler.
//
// It speaks HTTP/2 as the relay's own client (package h2client) and any
// conforming client need it, and no more: no server push, no priorities,
// no h2c upgrade. What it does differently from x/net's server is where
// the work runs: frames are read and handled on the connection's one
// goroutine, and a handler writes its frames to the connection itself,
// under a lock, instead of handing each to a serve loop and a writer
// goroutine; a small answer's HEADERS and DATA leave in one write. On
// small requests through relay and agent that took about a sixth of the
// agent's CPU (BENCHMARKS.md, "The agent's own HTTP/2 server"). With a
// Batcher, what it writes before each flush can leave in one system call
// (the agent's TLS records: "The agent's records in one write").
package h2server
