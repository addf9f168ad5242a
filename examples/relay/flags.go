package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
	"github.com/clusterconnect/clusterconnect/examples/internal/tokenflags"
	"github.com/clusterconnect/clusterconnect/internal/prom"
	"github.com/clusterconnect/clusterconnect/internal/tlsfile"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// flags are the relay's flags: most set a field of cfg directly, the rest
// are read by config.
type flags struct {
	cfg                     relay.Config
	certFile, keyFile       string
	selfSigned              bool
	caOut, caDir            string
	logFormat               string
	streamWindow, windowCap int
	issuer                  *tokenflags.Flags
	graph                   *tokenflags.GraphFlags
	callerRate, clusterRate float64
	fleet                   *fleetFlags
	otlpEndpoint            string
}

func register(fs *flag.FlagSet) *flags {
	f := &flags{issuer: tokenflags.Register(fs), fleet: registerFleet(fs)}
	c, t := &f.cfg, &f.cfg.Tunnel
	fs.StringVar(&c.Listen, "listen", relay.DefaultListen, "address for agents and clients (TLS); with -agent-listen, for clients only")
	fs.StringVar(&c.AgentListen, "agent-listen", "", "address for agents only (TLS, the same certificate): callers who fill -listen's connections cannot then keep agents from reconnecting, and the port can be opened to the clusters' addresses alone (default: agents use -listen)")
	fs.StringVar(&f.certFile, "cert", "", "TLS certificate file, read again when it or -key changes (new handshakes get the new one)")
	fs.StringVar(&f.keyFile, "key", "", "TLS key file")
	fs.BoolVar(&f.selfSigned, "self-signed", false, "generate a certificate for localhost (trials only)")
	fs.StringVar(&f.caOut, "ca-out", "relay-ca.crt", "with -self-signed: where to write the CA certificate")
	fs.StringVar(&f.caDir, "self-signed-dir", defaultSelfSignedDir(), "with -self-signed: where the CA and its key are kept, so that a restarted relay keeps its CA")
	fs.StringVar(&c.AgentsFile, "agents", "", "JSON file of clusters and their agent credentials (required)")
	fs.StringVar(&c.PublicURL, "public-url", "", "the URL agents dial, https://host[:port] (with -agent-listen, that listener's); names this relay in agent assertions (required when the agents file has publicKeys)")
	fs.BoolVar(&t.MetricsPerCluster, "metrics-per-cluster", false, "label request metrics with the cluster ID (one series per cluster, class and status code: not for many clusters)")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "address for Prometheus metrics, /livez, /healthz and /readyz (e.g. 127.0.0.1:9090)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	cli.TracingVar(fs, &f.otlpEndpoint)
	fs.BoolVar(&t.TrustClientIDs, "trust-client-ids", false, "keep the request ID (Audit-ID) a client sends, such as a client proxy's, as the request's ID at the relay, the agent and kube-apiserver's audit log; only where every admitted caller is trusted not to choose another request's ID (default: the relay gives each request its own and answers it as Audit-Id)")
	fs.StringVar(&c.PolicyFile, "access-policy", "", "JSON file saying who may reach which cluster (required, see -h); re-read when it changes")
	fs.BoolVar(&c.InsecureSkipClientAuth, "insecure-skip-client-auth", false, "let every request through to the agents, which then authenticate alone (not for a relay on the internet)")
	f.graph = tokenflags.RegisterGraph(fs, tokenflags.OverageRefuse, tokenflags.OverageGraph)
	fs.IntVar(&c.Limits.CallerStreams, "caller-streams", access.DefaultCallerStreams, "concurrent requests one caller may have open to one cluster (watches, exec and port-forward each hold one)")
	fs.Float64Var(&f.callerRate, "caller-rate", access.DefaultCallerRate, "requests per second one caller may send to one cluster (bursts of twice as many)")
	fs.IntVar(&c.Limits.ClusterStreams, "cluster-streams", access.DefaultClusterStreams, "concurrent requests all callers together may have open to one cluster")
	fs.Float64Var(&f.clusterRate, "cluster-rate", access.DefaultClusterRate, "requests per second all callers together may send to one cluster (bursts of twice as many)")
	fs.DurationVar(&t.WriteTimeout, "write-timeout", tunnel.DefaultWriteTimeout, "reset a client's stream (and drop a tunnel connection) when writing to it makes no progress this long")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", relay.DefaultDrainTimeout, "on SIGTERM, a fleet replica's wait for agents to move to another relay and their streams to finish")
	fs.DurationVar(&c.StopGrace, "stop-grace", relay.DefaultStopGrace, "on SIGTERM, a relay alone (no -etcd-endpoints): how long requests in flight get to finish before the rest (watches, exec) is ended; a second signal exits at once")
	fs.DurationVar(&t.UpgradeTimeout, "upgrade-timeout", tunnel.DefaultUpgradeTimeout, "how long an agent may take to answer exec, attach or port-forward")
	fs.IntVar(&f.streamWindow, "stream-window", tunnel.DefaultMaxReceiveBufferPerStream, "bytes of one response the relay takes from an agent ahead of the client, to begin with: what a client that stops reading pins")
	fs.IntVar(&f.windowCap, "stream-window-limit", tunnel.DefaultStreamWindowLimit, "how far one response's window grows while its client reads faster than the window lets the agent send: a cap on one download's speed over long round trips (a window per round trip)")
	cli.BoundVar(fs, &t.StreamWindowBudget, "stream-window-budget", tunnel.DefaultStreamWindowBudget, relay.Unlimited, "windows never grow", "`bytes` all grown windows may hold together beyond -stream-window each: what clients that read fast and then stop can pin in all")
	cli.BoundVar(fs, &c.MaxClientConns, "max-client-conns", relay.DefaultMaxClientConns, relay.Unlimited, "no bound", "client `connections` open at once, before any request is read; past it new ones are reset; an agent's connection leaves it once the agent is accepted; the same bound holds on the agent and peer listeners")
	cli.BoundVar(fs, &c.MaxHandshakes, "max-handshakes", relay.DefaultMaxHandshakes(), relay.Unlimited, "no bound", "TLS `handshakes` the clients', the agents' and the fleet's peer listener each compute at once (default: half the cores); past it a connection whose ClientHello has arrived waits its turn: what a flood of handshakes takes of the relay's cores")
	fs.IntVar(&t.ReconnectRate, "reconnect-rate", tunnel.DefaultReconnectRate, "agent handshakes a second this relay can take: after it restarts its agents come back spread over (agents it held / this) seconds, as it tells them when they connect")
	cli.BoundVar(fs, &t.MaxConnsPerCluster, "max-conns-per-cluster", tunnel.DefaultMaxConnsPerCluster, relay.Unlimited, "no bound", "tunnel `connections` one cluster's agents may hold at once; past it a handshake gets 429 and the agent retries later")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", relay.DefaultMaxHeaderBytes, "largest request header a client may send; the relay holds this much per connection while a caller sends it")
	cli.BoundVar(fs, &c.ClientSendBuffer, "client-send-buffer", tunnel.DefaultClientSendBuffer, relay.Unlimited, "the kernel's autotuning", "kernel send buffer per client connection in `bytes`: what a client that stops reading holds in the kernel, and a cap on one connection's speed over long round trips")
	return f
}

// config checks what the flags say in their words and completes the
// relay's config.
func (f *flags) config() (*relay.Config, error) {
	c := &f.cfg
	if err := f.check(); err != nil {
		return nil, err
	}
	log, err := cli.Logger(f.logFormat)
	if err != nil {
		return nil, err
	}
	c.Logger, c.Registry = log, prom.NewRegistry()
	t := &c.Tunnel
	t.MaxReceiveBufferPerStream, t.StreamWindowLimit = int32(f.streamWindow), int32(f.windowCap)
	c.Limits.CallerRate, c.Limits.CallerBurst = f.callerRate, int(2*f.callerRate+0.5)
	c.Limits.ClusterRate, c.Limits.ClusterBurst = f.clusterRate, int(2*f.clusterRate+0.5)
	if c.Fleet, err = f.fleet.config(); err != nil {
		return nil, err
	}
	if c.TLSConfig, err = f.serving(log); err != nil {
		return nil, err
	}
	if c.PolicyFile == "" {
		return c, nil
	}
	if c.Verifier, err = f.issuer.Verifier(log, c.Registry); err != nil {
		return nil, err
	}
	c.GroupResolver, err = f.graph.Resolver()
	return c, err
}

// check says what is wrong with the flags before anything starts.
func (f *flags) check() error {
	c := &f.cfg
	switch {
	case c.AgentsFile == "":
		return errors.New("-agents is required: which clusters may connect, and how they prove it (see -h)")
	case c.MaxHeaderBytes < 4<<10 || c.MaxHeaderBytes > tunnel.DefaultMaxHeaderBytes:
		return fmt.Errorf("-max-header-bytes must be between 4 KiB and %d (what agents accept)", tunnel.DefaultMaxHeaderBytes)
	case f.streamWindow < 16<<10 || f.streamWindow > 16<<20:
		return errors.New("-stream-window must be between 16 KiB and 16 MiB")
	case f.windowCap < f.streamWindow || f.windowCap > 64<<20:
		return errors.New("-stream-window-limit must be between -stream-window and 64 MiB")
	case c.Tunnel.ReconnectRate < 1:
		return errors.New("-reconnect-rate must be at least 1 (agent handshakes a second)")
	case c.PolicyFile != "" && c.InsecureSkipClientAuth:
		return errors.New("give -access-policy or -insecure-skip-client-auth, not both")
	case c.PolicyFile == "" && !c.InsecureSkipClientAuth:
		return errors.New("-access-policy is required: who may reach which cluster (see -h)")
	case c.PolicyFile != "" && !f.issuer.Set():
		return errors.New("-access-policy needs the token issuer: -tenant and -audience (Entra ID) or -issuer and -audience")
	case f.graph.Mode() == tokenflags.OverageWithoutGroups:
		return errors.New("-group-overage without-groups is for the agent: the relay's policy lists groups to let callers in")
	}
	return nil
}

// serving is the relay's serving certificate: -cert and -key, or one
// made for localhost under -self-signed's CA.
func (f *flags) serving(log interface{ Warn(string, ...any) }) (*tls.Config, error) {
	if !f.selfSigned {
		if f.certFile == "" || f.keyFile == "" {
			return nil, errors.New("-cert and -key are required (or -self-signed for a trial)")
		}
		// Read again when the files change: a certificate cert-manager
		// renews is served from the next handshake on.
		pair, err := tlsfile.NewKeyPair(f.certFile, f.keyFile)
		if err != nil {
			return nil, err
		}
		return &tls.Config{GetCertificate: pair.GetCertificate, MinVersion: tls.VersionTLS12}, nil
	}
	cert, err := cli.SelfSigned(f.caDir, f.caOut)
	if err != nil {
		return nil, err
	}
	log.Warn("using a self-signed certificate for localhost; trust the CA written to -ca-out", "ca", f.caOut)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// defaultSelfSignedDir is where -self-signed keeps its CA unless told.
func defaultSelfSignedDir() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "clusterconnect", "relay-self-signed")
}
