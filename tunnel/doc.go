// Package tunnel is the reverse HTTP/2 tunnel between an agent inside a
// firewalled network and a relay outside it. It moves HTTP and bytes; it
// knows nothing of Kubernetes or tokens.
//
// # How it works
//
// The agent dials out to the relay over TLS (through an HTTP CONNECT proxy
// if HTTPS_PROXY says so) and sends an HTTP/1.1 Upgrade request carrying its
// cluster ID and a credential. The relay checks the credential with an
// [Authenticator], answers 101, and the connection carries HTTP/2 with the
// roles reversed: the relay is the HTTP/2 client, the agent the server. So
// the relay sends requests down a connection the agent opened, and no
// inbound port is needed on the agent's network. PROTOCOL.md in this
// directory is the wire contract.
//
// Ordinary requests become HTTP/2 streams, multiplexed and flow-controlled
// per stream; responses of unknown length (watches, logs -f) are flushed as
// they arrive. A response's window at the relay starts small, so that a
// client that stops reading pins little, and grows while its client keeps
// up, to at most [RelayConfig.StreamWindowLimit] each and within one
// budget for the relay ([RelayConfig.StreamWindowBudget]). HTTP/1.1
// Upgrade requests (kubectl exec, attach, port-forward) become raw streams: one full-duplex HTTP/2 stream each,
// which the agent serves as an HTTP/1.1 connection, so its handler can
// hijack it as usual.
//
// # Relay
//
// A [Relay] is an [net/http.Handler]: it serves agents' handshakes at
// [DefaultAgentPath] and clients under /clusters/{id}/:
//
//	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{
//		Authenticator: tunnel.SecretAuthenticator{"prod-eu": secret},
//	})
//	…
//	srv := &http.Server{Addr: ":443", Handler: relay, ReadHeaderTimeout: 10 * time.Second}
//	tunnel.ConfigureServer(srv) // optional: small answers to HTTP/2 clients in one write
//	srv.ListenAndServeTLS(certFile, keyFile)
//
// kubectl speaks HTTP/2 to the relay; [ConfigureServer] has the server
// send each answer's headers with the start of its body, as the agent
// does on the tunnel, instead of in a write of their own, and, on
// connections from a [ClientListener], each write's TLS records in one
// system call.
//
// Importers that route requests themselves use [Relay.RoundTripper] and
// [Relay.DialContext]. [RelayConfig.Middleware] puts a layer around the
// transport clients' ordinary requests take (package sessions keeps
// watches going there), and [RelayConfig.Picker] chooses the connection
// and the replica a request goes to.
//
// The relay pings a connection that carries a request after
// [DefaultBusyPingAfter] of silence and drops it without an answer within
// [DefaultBusyPingTimeout]; the agent, which cannot know of requests sent
// into a dark path, pings whenever it has read nothing for
// [DefaultAgentPingInterval] and drops the connection without an answer
// within [DefaultAgentPingTimeout]. A path that stops carrying packets is
// so found by both sides within 5 s, and the relay's retries of what was
// sent into it take the agent's new connection. A relay alone stops with [Relay.Shutdown]; a
// replica of a fleet moves its agents elsewhere with [Relay.Drain].
//
// On the internet, wrap the listener with [ClientListener] to bound the
// connections held before any request is read; an agent's connection
// leaves that bound once its handshake is accepted, and
// [RelayConfig.MaxConnsPerCluster] bounds agents instead. Its
// MaxHandshakes, with the server's tls.Config through [LimitHandshakes],
// bounds the TLS handshakes computed at once. To keep callers
// who fill the clients' places from holding agents off too, serve
// [Relay.AgentHandler] and [Relay.ClusterHandler] on listeners of their
// own.
//
// # Fleet
//
// Several relays can serve behind one address as replicas of a fleet. Each
// gets a [Directory] (RelayConfig.Directory: which replica holds which
// cluster, shared through a store such as etcd) and a peer certificate
// (RelayConfig.PeerTLSConfig), and serves [Relay.PeerHandler] on a listener
// of its own that takes only the fleet's peer certificates. A request for a
// cluster whose agent is connected to another replica is checked by the
// replica the caller reached and sent on to a holder: HTTP/2 for ordinary
// requests, a connection of its own for an upgrade; one peer hop at most,
// and another holder when one cannot be reached. Ordinary requests to a
// replica share one connection (another only while that one is full),
// closed after 90 s without a request; a download through a replica gets
// the growing window a download from an agent gets, out of the same
// StreamWindowBudget.
//
// # Agent
//
// An [Agent] keeps [AgentConfig.Connections] tunnel connections open, with
// exponential backoff and full jitter between attempts, and serves what
// arrives with an http.Handler:
//
//	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
//		RelayURL:   "https://relay.example.com",
//		ClusterID:  "prod-eu",
//		Credential: tunnel.SecretCredential(secret),
//		Handler:    handler,
//	})
//	…
//	err = agent.Run(ctx) // until ctx ends, then drains
//
// # Credentials
//
// [SecretCredential] (the agent's side) and [SecretAuthenticator] (the
// relay's) are the simple pair: one secret per cluster, compared in
// constant time. [AssertionCredential] and
// [AssertionAuthenticator] avoid shared secrets: the agent signs a
// short-lived JWT with its own key for every connection, and the relay
// verifies it against the public key registered for that cluster, refusing
// expired and replayed assertions and assertions made for another relay
// (each names its relay, [AssertionAudience]).
//
// # Request IDs, lines and traces
//
// The relay gives each client request an ID ([RequestID]), answers it as
// Audit-Id and sends it to the agent as Audit-ID, which kube-apiserver
// records the request under; a client's own is kept only with
// [RelayConfig.TrustClientIDs]. With a Logger, the relay writes a line per
// request, and a line when a session starts and when it ends, with why;
// a [ClientAuthorizer] names the caller for them with [NoteCaller]. With
// [RelayConfig.TracerProvider], it makes OpenTelemetry spans of its hop.
//
// # Metrics
//
// With [RelayConfig.Registerer] or [AgentConfig.Registerer] set, the relay
// and the agent register Prometheus metrics there (the library never
// registers globally), prefixed clusterconnect_relay_ or
// clusterconnect_agent_:
//
//   - requests_total{class, code}: answered requests by class (read,
//     write, watch, upgrade) and HTTP status; on the relay with
//     [RelayConfig.MetricsPerCluster] also by cluster, for answers below
//     400 only, so that callers cannot make series up;
//   - request_duration_seconds{class}: reads and writes, to the end of the
//     answer;
//   - on the relay, sessions{class} and sessions_ended_total{class, end}:
//     long-lived requests whose answer began (watch, follow, exec, attach,
//     portforward, upgrade), and why they ended (client, upstream, lost,
//     stalled, relay-stopped, revoked, expired, cluster-removed, ended);
//   - tunnel_connections, tunnel_connections_opened_total,
//     tunnel_connections_closed_total{reason}: peer-closed,
//     network-error, lost, and relay-closed, drained (relay) or shutdown,
//     moved (agent);
//   - streams_in_flight, streams_opened_total, streams_closed_total;
//   - body_bytes_total{direction}: to_agent and from_agent, counted alike
//     on both sides (request and answer bodies and raw streams);
//   - handshakes_refused_total{reason}; on the relay clusters,
//     client_requests_refused_total, client_write_timeouts_total,
//     peer_forwarded_total and stream_window_grown_bytes (how much of
//     the window budget responses hold now).
//
// The counters [Stats] also holds are read from it at each scrape.
package tunnel
