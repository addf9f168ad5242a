package relay

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/sessions"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// Defaults of Config, for the zero value of each field.
const (
	DefaultListen = ":8443"
	// DefaultMaxClientConns bounds the connections open at once on each
	// listener, before any request is read. A connection costs ~45 KiB
	// before any request, ~150 KiB while a 64 KiB header arrives (up to
	// the 10 s header timeout): callers trickling headers can make the
	// relay hold about 1.5 GB at this bound (BENCHMARKS.md).
	DefaultMaxClientConns = 10000
	// DefaultMaxHeaderBytes bounds a client's request header. 64 KiB is
	// Envoy's bound too; an Entra token with 200 groups is about 12 KiB.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultDrainTimeout is how long a stopping replica of a fleet gives
	// agents to move to another replica and their streams to finish.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultStopGrace is how long a stopping relay alone, with nowhere to
	// move its agents, gives requests in flight to finish.
	DefaultStopGrace = 3 * time.Second
)

// DefaultMaxHandshakes is Config.MaxHandshakes's default: half the
// processors Go schedules on (GOMAXPROCS), at least one. A flood of TLS
// handshakes then takes at most half the relay's cores, and requests
// already admitted keep the rest: with 64 callers completing handshakes
// as fast as they could, a user's requests waited half as long as
// without a bound, and no fewer handshakes were completed
// (BENCHMARKS.md). One core completes about 3,000 handshakes a second.
func DefaultMaxHandshakes() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// RenewPath is where, under an access policy, a client presents a fresh
// token for its open sessions of a cluster: POST RenewPath+clusterID (see
// access.Authorizer.RenewHandler).
const RenewPath = "/sessions/renew/"

// ClustersPath is where, under an access policy, a signed-in caller asks
// which clusters it may reach: GET ClustersPath answers an
// access.ClusterList (see access.Authorizer.ClustersHandler).
const ClustersPath = "/clusters"

// ChallengePath is where, under an access policy, an exec credential
// plugin asks for the claims challenge its caller last got for a cluster
// (GET ChallengePath+clusterID; see access.Authorizer.ChallengeHandler):
// kubectl runs the plugin again after a 401 but never shows it the
// response.
const ChallengePath = "/challenges/"

// Unlimited, in a Config field that says so, lifts that bound.
const Unlimited = -1

// Config configures a Server. Exactly one way of authenticating agents
// (AgentsFile or Agents) and one of admitting callers (PolicyFile,
// Callers or InsecureSkipClientAuth) must be given.
type Config struct {
	// Listen is the address clients, and agents unless AgentListen is
	// set, reach the relay on; default DefaultListen. Listener, if set,
	// is used instead.
	Listen   string
	Listener net.Listener
	// AgentListen, if set, serves agents' handshakes alone, on a listener
	// of their own with the same certificate: callers who fill the
	// clients' connections cannot then keep agents from reconnecting, and
	// the port can be opened to the clusters' addresses alone.
	// AgentListener, if set, is used instead.
	AgentListen   string
	AgentListener net.Listener
	// TLSConfig holds the serving certificate (Certificates or
	// GetCertificate). Required.
	TLSConfig *tls.Config
	// MetricsListen, if set, serves Prometheus metrics (Registry) at
	// /metrics, and /livez, /healthz and /readyz.
	MetricsListen string

	// AgentsFile is the agents file (JSON, see AgentList), re-read every
	// ReloadInterval; PublicURL, the URL agents dial, names this relay in
	// their assertions (required when the file lists public keys).
	AgentsFile string
	PublicURL  string
	// Agents authenticates agents instead of AgentsFile: an *Agents, or
	// any tunnel.Authenticator.
	Agents tunnel.Authenticator

	// PolicyFile is the access policy (JSON, see access.Policy), re-read
	// every ReloadInterval. Callers' tokens are checked with Verifier
	// (required with it); GroupResolver looks up the groups of tokens
	// whose groups overflowed them; Limits fill in what the file leaves
	// out.
	PolicyFile    string
	Verifier      access.TokenVerifier
	GroupResolver tokens.GroupResolver
	Limits        access.Limits
	// Callers admits callers instead of PolicyFile: an *access.Authorizer
	// (whose SetPolicy the importer calls), or any
	// tunnel.ClientAuthorizer.
	Callers tunnel.ClientAuthorizer
	// InsecureSkipClientAuth lets every request through to the agents,
	// which then authenticate alone. It MUST NOT be set on a relay that
	// can be reached from the internet.
	InsecureSkipClientAuth bool

	// Fleet, if set, makes this relay one replica of a fleet sharing a
	// directory in etcd.
	Fleet *FleetConfig

	// Tunnel holds the tunnel's settings (see tunnel.RelayConfig): write
	// and upgrade timeouts, windows, MaxConnsPerCluster,
	// MetricsPerCluster. Its WriteTimeout holds on every listener too;
	// its Middleware defaults to Middleware, so that a watch that breaks
	// resumes or ends saying why, and so does an exec or attach.
	// Authenticator, ClientAuthorizer, Directory, PeerTLSConfig,
	// ReplicaID, Registerer, TracerProvider and Logger are the Server's to
	// set.
	Tunnel tunnel.RelayConfig

	// MaxClientConns bounds the connections each listener holds open at
	// once before any request is read; past it new ones are reset. An
	// agent's connection leaves the bound once the agent is accepted.
	// Default DefaultMaxClientConns; Unlimited lifts it.
	MaxClientConns int
	// MaxHandshakes bounds the TLS handshakes the clients', the agents'
	// and a fleet's peer listener each compute at once; past it, a
	// connection whose ClientHello has arrived waits its turn
	// (tunnel.ClientListenerConfig.MaxHandshakes). Default
	// DefaultMaxHandshakes(); Unlimited lifts it.
	MaxHandshakes int
	// MaxHeaderBytes bounds a client's request header; default
	// DefaultMaxHeaderBytes, at most tunnel.DefaultMaxHeaderBytes (what
	// agents accept).
	MaxHeaderBytes int
	// ClientSendBuffer is the kernel send buffer per client connection;
	// default tunnel.DefaultClientSendBuffer; Unlimited leaves the
	// kernel's autotuning (see tunnel.ClientListenerConfig).
	ClientSendBuffer int
	// DrainTimeout bounds the stop of a replica of a fleet: how long
	// agents get to move to another replica and their streams to finish.
	// Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	// StopGrace bounds the stop of a relay alone: how long requests in
	// flight get to finish before what is left (watches, exec sessions)
	// is ended. Default DefaultStopGrace.
	StopGrace time.Duration
	// ReloadInterval is how often AgentsFile and PolicyFile are checked
	// for changes; default DefaultReloadInterval.
	ReloadInterval time.Duration

	// Registry receives the relay's metrics and is what MetricsListen
	// serves; nil: a registry of the Server's own, with the Go runtime
	// and process collectors.
	Registry *prometheus.Registry
	// TracerProvider, if set, traces clients' requests (OpenTelemetry, see
	// tunnel.RelayConfig.TracerProvider); nil: none.
	TracerProvider trace.TracerProvider
	// Logger receives the relay's events, and a line per request; nil
	// discards them.
	Logger *slog.Logger
}

// Middleware is the relay's default tunnel.RelayConfig.Middleware: watches
// resume when their stream breaks, or end with an ERROR event saying why
// (sessions.Watches); an exec or attach whose connection to the cluster
// is lost ends with a Status on its error stream (sessions.Upgrades).
func Middleware(next http.RoundTripper) http.RoundTripper {
	return sessions.Watches(sessions.Upgrades(next))
}
