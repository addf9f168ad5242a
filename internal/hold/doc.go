// Package hold holds back, for a moment, an HTTP/2 write that ends with a
// header block, so that the stream's first DATA leaves in the same write:
// one write and one wake-up of the reader instead of two for a small
// message. The relay's HTTP/2 client and the relay's server for its own
// clients each write through a Conn; the agent's server (package
// h2server) gathers a small answer's frames itself.
package hold
