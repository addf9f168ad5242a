// Package h2frame holds what the two ends of a tunnel connection's
// HTTP/2 (packages h2client and h2server) do the same way: write header
// blocks, and measure the round trip and judge by it whether a receive
// window holds its stream back.
package h2frame
