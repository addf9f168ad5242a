package tunnel

import "time"

// Defaults of RelayConfig and AgentConfig, for the zero value of each
// field. Where both sides have a setting, they share one default.
const (
	// DefaultPingInterval is how long a tunnel connection may be quiet
	// before either side pings it; DefaultPingTimeout how long the answer
	// may take before the connection is dropped.
	DefaultPingInterval = 15 * time.Second
	DefaultPingTimeout  = 10 * time.Second
	// DefaultBusyPingAfter and DefaultBusyPingTimeout are the relay's
	// bounds while a connection carries requests: a silent path is found
	// within 5 s, while an idle connection costs a ping every 15 s.
	DefaultBusyPingAfter   = 2 * time.Second
	DefaultBusyPingTimeout = 3 * time.Second
	// DefaultAgentPingInterval and DefaultAgentPingTimeout are the
	// agent's: it cannot tell a request the relay sent into a dark path
	// from quiet, so it pings whenever it has read nothing for 2 s and
	// drops the connection without an answer within 3 s. A black hole is
	// then found by both sides within 5 s however idle the agent was, and
	// the relay's retry of a request sent into it takes the agent's new
	// connection. It costs the relay a ping's round trip every 2 s per
	// idle connection (BENCHMARKS.md: about 20 µs of CPU per agent per
	// second on the test machine); AgentConfig.PingInterval trades it back.
	DefaultAgentPingInterval = 2 * time.Second
	DefaultAgentPingTimeout  = 3 * time.Second
	// DefaultRetryWait is how long a retry waits for a live connection
	// (RelayConfig.RetryWait).
	DefaultRetryWait = 2 * time.Second
	// DefaultWriteTimeout drops a connection on which a write made no
	// progress for this long (a peer that stopped reading).
	DefaultWriteTimeout = 30 * time.Second

	// DefaultUpgradeTimeout is how long the relay waits for an agent's
	// answer to an upgrade: the API server's own answer (it dials the
	// kubelet) comes in well under it.
	DefaultUpgradeTimeout = 30 * time.Second
	// DefaultRelayHandshakeTimeout bounds authenticating an agent and
	// switching its connection to HTTP/2, on the relay.
	DefaultRelayHandshakeTimeout = 10 * time.Second
	// DefaultAgentHandshakeTimeout bounds dialing, TLS and the handshake,
	// on the agent.
	DefaultAgentHandshakeTimeout = 15 * time.Second

	// DefaultConnections is how many tunnel connections an agent keeps.
	DefaultConnections = 2
	// DefaultMaxConnsPerCluster is how many tunnel connections one
	// cluster's agents may hold at one relay: eight times what an agent
	// keeps by default, for agents that keep more and for the
	// replacements they open before closing a connection.
	DefaultMaxConnsPerCluster = 16
	// DefaultMinBackoff and DefaultMaxBackoff bound an agent's wait before
	// reconnecting; a connection that lasted DefaultStableAfter resets it.
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = 30 * time.Second
	DefaultStableAfter = 30 * time.Second
	// DefaultReconnectRate is the agent handshakes a second a relay
	// spreads its agents' reconnects to (RelayConfig.ReconnectRate): what
	// one core takes with room to spare (a handshake costs the relay
	// about 0.8 ms of CPU, BENCHMARKS.md "100,000 agents").
	DefaultReconnectRate = 1000
	// maxReconnectWindow bounds the window an agent takes from its relay.
	maxReconnectWindow = 5 * time.Minute
	// DefaultDrainTimeout bounds how long an agent that is stopping waits
	// for in-flight streams.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultMaxConcurrentStreams is the agent's stream limit per
	// connection (each watch holds a stream).
	DefaultMaxConcurrentStreams = 2000
	// DefaultMaxUploadBufferPerStream and DefaultMaxUploadBufferPerConnection
	// are the agent's receive windows: the connection's is many streams',
	// so one stalled stream cannot take it all.
	DefaultMaxUploadBufferPerStream     = 256 << 10
	DefaultMaxUploadBufferPerConnection = 16 << 20
	// DefaultMaxUploadWindowPerStream is how far a request body's window
	// grows while the upstream keeps up: 256 KiB moves an upload at about
	// 5 MB/s over a 50 ms round trip to the relay, 4 MiB at about 80
	// (BENCHMARKS.md, "Uploads").
	DefaultMaxUploadWindowPerStream = 4 << 20

	// DefaultMaxReceiveBufferPerStream is the relay's receive window for
	// one response from an agent: what a client that stops reading can
	// make the relay hold, besides one copy buffer (see
	// RelayConfig.MaxReceiveBufferPerStream). At 64 KiB a thousand
	// stalled downloads hold about 230 MiB of relay memory in all; at
	// 128 KiB about 280 MiB (BENCHMARKS.md).
	DefaultMaxReceiveBufferPerStream = 64 << 10
	// DefaultStreamWindowLimit and DefaultStreamWindowBudget bound the
	// windows of responses whose clients keep up (see
	// RelayConfig.StreamWindowLimit). 4 MiB moves one download at about
	// 80 MB/s over a 50 ms round trip to the agent (1 MiB: 20 MB/s; 64 KiB:
	// 1.3 MB/s) and costs either side of a loopback download a tenth less
	// CPU than 1 MiB; the 8 MiB budget lets one window reach 4 MiB and four
	// more 1 MiB (eight 1 MiB when none is larger), and keeps 1,000 stalled
	// downloads as they were, whatever the limit, even when each was read
	// fast before it stopped (BENCHMARKS.md).
	DefaultStreamWindowLimit  = 4 << 20
	DefaultStreamWindowBudget = 8 << 20

	// DefaultClientSendBuffer is the kernel send buffer per client
	// connection the relay binary asks ClientListener for: at 256 KiB a
	// thousand stalled clients hold about 570 MiB of kernel memory, under
	// the TCP memory-pressure threshold Linux sets on machines with 10 GiB
	// or more (tcp_mem, about a sixteenth of memory), and a connection
	// still moves about 256 KiB per round trip (25 MB/s at 10 ms).
	DefaultClientSendBuffer = 256 << 10

	// DefaultMaxHeaderBytes bounds a header list in the tunnel, on both
	// sides: the agent takes request headers up to it and the relay sends
	// none larger, and takes agents' response headers up to it. It equals
	// net/http's default, so what a relay's http.Server accepts from HTTP/2
	// clients fits; HTTP/1.1 clients' many small headers can count for
	// more in HTTP/2 (32 bytes a field) and get 431.
	DefaultMaxHeaderBytes = 1 << 20
)

// orDefault is d, or def when d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
