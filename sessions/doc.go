// Package sessions knows what a long-lived Kubernetes request is — a
// watch, exec, attach and port-forward — so that package tunnel
// need not: it is a layer the relay (tunnel.RelayConfig.Middleware) and
// the client proxy put between a client and the cluster.
//
// # Watches
//
// A watch whose stream breaks under it (its tunnel connection lost, its
// agent gone, the relay stopping) would simply stop, and kubectl exits 0
// with nothing on stderr. Watches ends such a stream with a final ERROR
// event whose Status says why; the real kubectl 1.32 prints it
// ("Failure  ServiceUnavailable  the watch's connection to the cluster
// broke …"), and a client-go reflector watches again from the last
// resourceVersion it saw. The cost is a scan for the end of each event,
// and a copy of an event's bytes only while its end has not yet arrived.
//
// # Exec and attach
//
// An exec or attach whose connection to the cluster is lost for good
// (its agent gone; through the client proxy, its session not re-attached
// in time, see package sessions/reattach) would end with kubectl over
// SPDY exiting 0 and printing nothing, as if the command had run.
// Upgrades ends it with a Status on the session's error stream, written
// in the client's own framing (WebSocket channel protocols v4 and v5,
// SPDY/3.1) at a frame boundary; kubectl prints "error: clusterconnect:
// the connection to the cluster was lost and could not be resumed (…)"
// and exits 1. It follows the frames the cluster sends, copying nothing.
//
// # Port-forward
//
// kubectl port-forward speaks SPDY/3.1 (inside WebSocket binary messages
// from kubectl 1.31 on) and opens an error stream and a data stream for
// each local connection it forwards. A port-forward lost for good or
// ended on purpose would show only kubectl's own "error: lost connection
// to pod". Upgrades follows the streams the client opens (decompressing
// its header blocks, at most 1,024 streams and small headers, else it
// stops following) and those the cluster finishes, and at the end puts
// the words on each open error stream and finishes its data stream;
// kubectl prints "an error occurred forwarding 8080 -> 80: clusterconnect:
// …" before its own line, and exits 1. A port-forward with no connection
// open has no stream to say anything on. Following costs about 4 µs per
// MiB each way and 42 KB per port-forward once it forwards a connection.
package sessions
