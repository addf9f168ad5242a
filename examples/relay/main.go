// Command relay is the public side of clusterconnect: agents dial in and
// keep reverse tunnels open; clients reach a cluster under
// https://<relay>/clusters/<cluster-id>/.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/internal/cli"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/tokenflags"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

const usage = `Usage: relay [flags]

Serves agents' tunnel handshakes at /tunnel/v1/connect and clients under
/clusters/{cluster-id}/, over TLS.

The agents file is JSON: for each cluster ID either a shared secret or the
agent's public key(s) in PEM (the agent then signs short-lived assertions):

  {"clusters": {
     "prod-eu": {"secret": "…"},
     "edge-7":  {"publicKeys": ["-----BEGIN PUBLIC KEY-----\n…"]}
  }}

The access policy is JSON too: for each cluster, who may reach it. Tokens
are verified first (-tenant/-issuer, -audience: the same as the agents'),
then the cluster's rule applies: allowed issuers and tenants and, if any is
listed, user, group or app object IDs. Unlisted clusters are refused in the
same words as forbidden ones. Limits per caller and per cluster come from
the flags unless the file sets them. The file is re-read when it changes.

  {"clusters": {
     "prod-eu": {"tenants": ["<tenant ID>"], "groups": ["<group object ID>"]},
     "edge-7":  {"users": ["<user object ID>"], "apps": ["<CI app client ID>"],
                 "limits": {"callerStreams": 50}},
     "lab":     {"passThroughUnverified": true}
  },
   "limits": {"callerStreams": 256, "callerRate": 100}}

For a trial without certificates, -self-signed makes one for localhost and
writes its CA to -ca-out for agents and clients to trust.

Flags:
`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	listen := fs.String("listen", ":8443", "address for agents and clients (TLS); with -agent-listen, for clients only")
	agentListen := fs.String("agent-listen", "", "address for agents only (TLS, the same certificate): callers who fill -listen's connections cannot then keep agents from reconnecting, and the port can be opened to the clusters' addresses alone (default: agents use -listen)")
	certFile := fs.String("cert", "", "TLS certificate file")
	keyFile := fs.String("key", "", "TLS key file")
	selfSigned := fs.Bool("self-signed", false, "generate a certificate for localhost (trials only)")
	caOut := fs.String("ca-out", "relay-ca.crt", "with -self-signed: where to write the CA certificate")
	caDir := fs.String("self-signed-dir", defaultSelfSignedDir(), "with -self-signed: where the CA and its key are kept, so that a restarted relay keeps its CA")
	agentsFile := fs.String("agents", "", "JSON file of clusters and their agent credentials (required)")
	publicURL := fs.String("public-url", "", "the URL agents dial, https://host[:port] (with -agent-listen, that listener's); names this relay in agent assertions (required when the agents file has publicKeys)")
	perCluster := fs.Bool("metrics-per-cluster", false, "label request metrics with the cluster ID (one series per cluster, class and status code: not for many clusters)")
	metricsListen := fs.String("metrics-listen", "", "address for Prometheus metrics, /livez, /healthz and /readyz (e.g. 127.0.0.1:9090)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	policyFile := fs.String("access-policy", "", "JSON file saying who may reach which cluster (required, see -h); re-read when it changes")
	insecureOpen := fs.Bool("insecure-skip-client-auth", false, "let every request through to the agents, which then authenticate alone (not for a relay on the internet)")
	issuerFlags := tokenflags.Register(fs)
	graphFlags := tokenflags.RegisterGraph(fs, tokenflags.OverageRefuse, tokenflags.OverageGraph)
	limits := registerLimits(fs)
	writeTimeout := fs.Duration("write-timeout", tunnel.DefaultWriteTimeout, "reset a client's stream (and drop a tunnel connection) when writing to it makes no progress this long")
	drainTimeout := fs.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long agents get to move to another relay and their streams to finish")
	upgradeTimeout := fs.Duration("upgrade-timeout", tunnel.DefaultUpgradeTimeout, "how long an agent may take to answer exec, attach or port-forward")
	streamWindow := fs.Int("stream-window", tunnel.DefaultMaxReceiveBufferPerStream, "bytes of one response the relay takes from an agent ahead of the client, to begin with: what a client that stops reading pins")
	windowLimit := fs.Int("stream-window-limit", tunnel.DefaultStreamWindowLimit, "how far one response's window grows while its client reads faster than the window lets the agent send: a cap on one download's speed over long round trips (a window per round trip)")
	windowBudget := fs.Int64("stream-window-budget", tunnel.DefaultStreamWindowBudget, "bytes all grown windows may hold together beyond -stream-window each: what clients that read fast and then stop can pin in all (0: windows never grow)")
	maxConns := fs.Int("max-client-conns", defaultMaxClientConns, "client connections open at once, before any request is read; past it new ones are reset (0: no bound); an agent's connection leaves it once the agent is accepted; the same bound holds on the agent and peer listeners")
	maxPerCluster := fs.Int("max-conns-per-cluster", tunnel.DefaultMaxConnsPerCluster, "tunnel connections one cluster's agents may hold at once; past it a handshake gets 429 and the agent retries later (0: no bound)")
	maxHeaderBytes := fs.Int("max-header-bytes", defaultMaxHeaderBytes, "largest request header a client may send; the relay holds this much per connection while a caller sends it")
	fleetFlags := registerFleet(fs)
	sendBuffer := fs.Int("client-send-buffer", tunnel.DefaultClientSendBuffer, "kernel send buffer per client connection in bytes: what a client that stops reading holds in the kernel, and a cap on one connection's speed over long round trips (0: the kernel's autotuning)")
	if err := cli.ParseWithEnv(fs, "CLUSTERCONNECT_RELAY", os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := cli.Logger(*logFormat)
	if err != nil {
		return err
	}
	if *agentsFile == "" {
		return errors.New("-agents is required: which clusters may connect, and how they prove it (see -h)")
	}
	if *maxHeaderBytes < 4<<10 || *maxHeaderBytes > tunnel.DefaultMaxHeaderBytes {
		return fmt.Errorf("-max-header-bytes must be between 4 KiB and %d (what agents accept)", tunnel.DefaultMaxHeaderBytes)
	}
	if *streamWindow < 16<<10 || *streamWindow > 16<<20 {
		return errors.New("-stream-window must be between 16 KiB and 16 MiB")
	}
	if *windowLimit < *streamWindow || *windowLimit > 64<<20 {
		return errors.New("-stream-window-limit must be between -stream-window and 64 MiB")
	}
	if *maxPerCluster < 0 {
		return errors.New("-max-conns-per-cluster must not be negative (0: no bound)")
	}
	if *windowBudget < 0 {
		return errors.New("-stream-window-budget must not be negative")
	}
	if *windowBudget == 0 {
		*windowBudget = -1 // RelayConfig's word for none
	}
	fl, err := fleetFlags.setup(log)
	if err != nil {
		return err
	}
	var replays tunnel.ReplayCache // a fleet's replicas share theirs
	if fl != nil {
		replays = fl.dir
	}
	auth, rawAgents, err := newAgents(*agentsFile, *publicURL, replays, log)
	if err != nil {
		return err
	}
	cert, err := serverCert(*certFile, *keyFile, *selfSigned, *caDir, *caOut, log)
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	// Agents' credentials are re-read like the access policy: clusters
	// added or removed, secrets and keys rotated, on every replica.
	go watchFile(ctx, *agentsFile, rawAgents, 2*time.Second, log, "agents file", func() (int, error) {
		_, n, err := auth.load()
		return n, err
	})
	reg := cli.NewRegistry()
	rcfg := &tunnel.RelayConfig{Authenticator: auth, Logger: log, WriteTimeout: *writeTimeout, UpgradeTimeout: *upgradeTimeout,
		MaxReceiveBufferPerStream: int32(*streamWindow), StreamWindowLimit: int32(*windowLimit), StreamWindowBudget: *windowBudget,
		Registerer: reg, MetricsPerCluster: *perCluster, MaxConnsPerCluster: *maxPerCluster}
	if *maxPerCluster == 0 {
		rcfg.MaxConnsPerCluster = -1 // RelayConfig's word for none
	}
	switch {
	case *policyFile != "" && *insecureOpen:
		return errors.New("give -access-policy or -insecure-skip-client-auth, not both")
	case *insecureOpen:
		log.Warn("client requests are not authenticated at the relay: anyone who can reach it can send requests to every connected cluster's agent")
	case *policyFile == "":
		return errors.New("-access-policy is required: who may reach which cluster (see -h)")
	default:
		if !issuerFlags.Set() {
			return errors.New("-access-policy needs the token issuer: -tenant and -audience (Entra ID) or -issuer and -audience")
		}
		verifier, err := issuerFlags.Verifier(log, reg)
		if err != nil {
			return err
		}
		policy, raw, err := loadPolicy(*policyFile, limits)
		if err != nil {
			return err
		}
		if graphFlags.Mode() == tokenflags.OverageWithoutGroups {
			return errors.New("-group-overage without-groups is for the agent: the relay's policy lists groups to let callers in")
		}
		groups, err := graphFlags.Resolver()
		if err != nil {
			return err
		}
		authz, err := access.New(&access.Config{Verifier: verifier, Policy: policy, Logger: log, GroupResolver: groups})
		if err != nil {
			return err
		}
		rcfg.ClientAuthorizer = authz
		go watchFile(ctx, *policyFile, raw, 2*time.Second, log, "access policy", func() (int, error) {
			p, _, err := loadPolicy(*policyFile, limits)
			if err == nil {
				err = authz.SetPolicy(p)
			}
			if err != nil {
				return 0, err
			}
			return len(p.Clusters), nil
		})
	}
	if fl != nil {
		rcfg.Directory, rcfg.PeerTLSConfig, rcfg.ReplicaID = fl.dir, fl.clientTLS, fl.id
	}
	relay, err := tunnel.NewRelay(rcfg)
	if err != nil {
		return err
	}
	leftFleet := func() {}
	if fl != nil {
		if leftFleet, err = fl.serve(ctx, relay, *maxConns); err != nil {
			return err
		}
	}

	var refusedConns atomic.Uint64 // client connections past -max-client-conns
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "clusterconnect_relay_client_conns_refused_total",
		Help: "Connections reset at accept, past -max-client-conns (on the agents' listener too, with -agent-listen).",
	}, func() float64 { return float64(refusedConns.Load()) }))
	if *metricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/healthz", cli.OK)
		mux.Handle("/livez", cli.OK)
		mux.Handle("/readyz", cli.OK)
		mux.Handle("/metrics", cli.MetricsHandler(reg))
		go cli.Serve(ctx, *metricsListen, mux, log, "metrics")
	}

	// onRefused counts a connection reset at a listener's bound, and
	// says so now and then.
	onRefused := func(which string) func() {
		return func() {
			if refusedConns.Add(1)%1000 == 1 {
				log.Warn(which+" connections at their bound; resetting new ones", "max", *maxConns, "refused", refusedConns.Load())
			}
		}
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	var front http.Handler = relay // agents and clients
	if *agentListen != "" {
		front = relay.ClusterHandler()
		if err := serveAgents(ctx, *agentListen, relay, tlsConfig, *maxHeaderBytes,
			tunnel.ClientListenerConfig{WriteTimeout: *writeTimeout, MaxConns: *maxConns, OnRefused: onRefused("agent")}, log); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/healthz", cli.OK)
	mux.Handle("/", front)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// An idle kept-alive connection is a descriptor and a goroutine
		// held for nothing.
		IdleTimeout: 90 * time.Second,
		// Under the agents' limit, so what the relay accepts they accept.
		MaxHeaderBytes: *maxHeaderBytes,
		TLSConfig:      tlsConfig,
		// A client's stalled upload must not hold the whole connection's
		// window: the per-connection buffer is many per-stream ones.
		// An HTTP/2 client that stops reading altogether loses its
		// connection, not only its streams.
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 20, MaxReceiveBufferPerConnection: 32 << 20, WriteByteTimeout: *writeTimeout},
	}
	// kubectl speaks HTTP/2: send each answer's headers with its body.
	if err := tunnel.ConfigureServer(srv); err != nil {
		return err
	}
	tcp, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	ln := tunnel.ClientListener(tcp, tunnel.ClientListenerConfig{SendBuffer: *sendBuffer, WriteTimeout: *writeTimeout, MaxConns: *maxConns,
		OnRefused: onRefused("client")})
	log.Info("relay listening", "addr", ln.Addr().String())
	// On SIGTERM: leave the fleet's directory, ask agents to move to
	// another replica, and let their streams finish, for up to
	// -drain-timeout; then close what is left.
	drained := make(chan struct{})
	context.AfterFunc(ctx, func() {
		defer close(drained)
		log.Info("draining", "timeout", *drainTimeout)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), *drainTimeout)
		defer cancel()
		if err := relay.Drain(dctx); err != nil {
			log.Warn("agents still connected at the drain deadline; closed", "err", err)
		}
		log.Info("shutting down")
	})
	err = httpx.ServeUntil(ctx, srv, ln, 10*time.Second)
	leftFleet()
	if ctx.Err() != nil {
		<-drained
	}
	return err
}

func serverCert(certFile, keyFile string, selfSigned bool, caDir, caOut string, log *slog.Logger) (tls.Certificate, error) {
	if !selfSigned {
		if certFile == "" || keyFile == "" {
			return tls.Certificate{}, errors.New("-cert and -key are required (or -self-signed for a trial)")
		}
		return tls.LoadX509KeyPair(certFile, keyFile)
	}
	// The same CA at every start: agents and proxies that trust the file
	// written to -ca-out keep working across restarts.
	ca, err := pki.LoadOrCreateCA(caDir, "clusterconnect relay CA (self-signed)", 365*24*time.Hour)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("-self-signed-dir: %w", err)
	}
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(caOut, ca.CertPEM(), 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("-ca-out: %w", err)
	}
	log.Warn("using a self-signed certificate for localhost; trust the CA written to -ca-out", "ca", caOut)
	return leaf.TLSCertificate()
}

// Front-end bounds for what an unauthenticated caller can make the relay
// hold. A connection costs ~45 KiB before any request, ~150 KiB while a
// 64 KiB header arrives (up to ReadHeaderTimeout): at these defaults
// callers trickling headers can make the relay hold about 1.5 GB for 10 s
// (BENCHMARKS.md).
const (
	defaultMaxClientConns = 10000
	// 64 KiB is Envoy's bound too; an Entra token with 200 groups is
	// about 12 KiB.
	defaultMaxHeaderBytes = 64 << 10
)

// defaultSelfSignedDir is where -self-signed keeps its CA unless told.
func defaultSelfSignedDir() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "clusterconnect", "relay-self-signed")
}
