// Package h2client is the relay's HTTP/2 client on the tunnel
// connections agents dial: a Conn per connection sends the relay's
// requests and reads the agent's answers, with the streams' receive
// windows shared out of one budget (Config).
//
// The relay's side of the tunnel is this HTTP/2 client on a connection the
// agent dialed, written on x/net's Framer and hpack. It is its own client,
// not x/net's, for one reason: the receive window of each response. x/net's
// client gives every stream the same window and returns exactly what was
// read; a window large enough for a download to run at speed would let
// every client that stops reading pin as much of the relay. Here a stream
// starts with Settings.InitialWindow and its window grows, up to
// Settings.WindowLimit, only while its client keeps up with the agent, out
// of one budget for the whole relay (Settings.WindowBudget); a client that stops
// reading stops its window from growing. BENCHMARKS.md, "A window that
// grows while its client reads".
//
// The relay only ever sends requests and reads answers: no server push,
// no priorities, one GOAWAY honoured as the agent drains.
//
// The agent side uses the same client toward kube-apiserver, through
// package h2transport, which dials the connections and names the server
// in the client's errors (Settings.Peer). The comments here speak of the
// relay and its agents; for h2transport read the agent side and the API
// server.
package h2client
