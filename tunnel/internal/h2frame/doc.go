// Package h2frame holds what the two ends of a tunnel connection's
// HTTP/2 (packages h2client and h2server) write the same way.
package h2frame
