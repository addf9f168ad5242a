// Package memnet is an in-memory network for tests under
// testing/synctest, as x/net's HTTP/2 tests have: a connection's writes
// never block (each direction is an unbounded buffer) and its reads wait
// on channels made in the bubble, so that a bubble whose goroutines all
// wait on the network is idle and its clock moves on. Connections can be
// frozen (nothing written reaches the other side until they thaw, as when
// a path drops packets) or cut, and dials refused, as when a server goes
// away. Make a Net inside the bubble that uses it.
package memnet
