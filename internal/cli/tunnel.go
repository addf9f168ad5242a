package cli

import "github.com/clusterconnect/clusterconnect/tunnel"

// TunnelCounters turns a relay's or agent's Stats into metrics named
// <prefix>_….
func TunnelCounters(prefix string, s tunnel.Stats) []Counter {
	c := func(name, help string, v uint64) Counter {
		return Counter{Name: prefix + "_" + name, Help: help, Type: "counter", Value: float64(v)}
	}
	out := []Counter{
		c("connections_opened_total", "Tunnel connections established.", s.ConnectionsOpened),
		c("connections_closed_total", "Tunnel connections closed.", s.ConnectionsClosed),
		c("streams_opened_total", "Requests and raw streams carried.", s.StreamsOpened),
		c("streams_closed_total", "Requests and raw streams finished.", s.StreamsClosed),
		c("bytes_to_agent_total", "Body bytes sent towards the agent.", s.BytesToAgent),
		c("bytes_from_agent_total", "Body bytes received from the agent.", s.BytesFromAgent),
		c("peer_forwarded_total", "Requests sent on to another replica of the fleet (relay only).", s.PeerForwarded),
	}
	for reason, n := range s.HandshakeFailures {
		x := c("handshake_failures_total", "Refused agent handshakes by reason.", n)
		x.Labels = map[string]string{"reason": reason}
		out = append(out, x)
	}
	return out
}
