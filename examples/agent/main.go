// Command agent runs inside the cluster: it dials out to the relay, keeps
// reverse tunnels open, and serves every request that arrives through them
// with the token-to-impersonation handler in front of the API server. It
// parses its flags into an agent.Config and runs an agent.Agent.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/agent"
	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
	"github.com/clusterconnect/clusterconnect/examples/internal/tokenflags"
	"github.com/clusterconnect/clusterconnect/internal/prom"
	"github.com/clusterconnect/clusterconnect/sessions/reattach"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

const usage = `Usage: agent [flags]
       agent keygen -cluster-id ID   (a key pair for -key-file; see agent keygen -h)

Dials out to the relay (honouring HTTPS_PROXY and NO_PROXY) and serves the
cluster's API through the tunnel. Each request's bearer token is verified
and the request sent to the API server as the token's user, through
impersonation, with the agent's own credentials (the pod's service account,
or -kubeconfig).

Tokens: Microsoft Entra ID with -tenant and -audience (the server
application's client ID and/or Application ID URI), or any OIDC issuer with
-issuer and -audience.

Flags:
`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

// flags are the agent's flags: most set a field of cfg directly, the rest
// are read by config.
type flags struct {
	cfg                               agent.Config
	secretFile, keyFile, assertionAud string
	relayCA, kubeconfig, logFormat    string
	otlpEndpoint                      string
	issuer                            *tokenflags.Flags
	graph                             *tokenflags.GraphFlags
}

func register(fs *flag.FlagSet) *flags {
	f := &flags{issuer: tokenflags.Register(fs)}
	c := &f.cfg
	fs.StringVar(&c.RelayURL, "relay-url", "", "the relay, https://host[:port] (required)")
	fs.StringVar(&c.ClusterID, "cluster-id", "", "this cluster's ID at the relay (required)")
	fs.StringVar(&f.secretFile, "secret-file", "", "file holding the cluster's shared secret (re-read at every connection)")
	fs.StringVar(&f.keyFile, "key-file", "", "PEM private key to sign assertions with, instead of a secret (re-read at every connection)")
	fs.StringVar(&f.assertionAud, "assertion-audience", "", "with -key-file: the relay named in assertions, as the relay's -public-url (default: from -relay-url)")
	fs.StringVar(&f.relayCA, "relay-ca", "", "PEM CA file for the relay's certificate, read again when it changes (default: system roots)")
	fs.IntVar(&c.Tunnel.Connections, "connections", tunnel.DefaultConnections, "tunnel connections to keep open")
	fs.DurationVar(&c.Tunnel.PingInterval, "ping-interval", tunnel.DefaultAgentPingInterval, "ping a tunnel connection on which nothing arrived for this long; a dark network path is found within this and 3 s, at a ping's round trip per interval per connection at the relay")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig for the API server (default: in-cluster service account)")
	f.graph = tokenflags.RegisterGraph(fs, tokenflags.OverageRefuse, tokenflags.OverageGraph, tokenflags.OverageWithoutGroups)
	fs.BoolVar(&c.PassThroughForeignTokens, "pass-through-foreign-tokens", false, "send tokens of other issuers (service accounts) to the API server untouched")
	fs.BoolVar(&c.AllowNestedImpersonation, "allow-nested-impersonation", false, "honour callers' --as/--as-group when RBAC allows them to impersonate")
	fs.StringVar(&c.HealthListen, "health-listen", ":8081", "address for /livez, /healthz, /readyz and /metrics")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	cli.TracingVar(fs, &f.otlpEndpoint)
	fs.DurationVar(&c.Sessions.Grace, "session-grace", reattach.DefaultGrace, "how long an exec, attach or port-forward opened through a client proxy, and its connection to the API server, wait to be re-attached after their tunnel connection is lost")
	cli.DurationBoundVar(fs, &c.WaitForKeys, "wait-for-keys", agent.DefaultWaitForKeys, agent.ConnectAtOnce, "connect at once", "how long (a `duration`) to wait for the issuers' keys before connecting to the relay")
	return f
}

func run() error {
	if len(os.Args) > 1 && os.Args[1] == "keygen" {
		return keygenCommand(os.Args[2:], os.Stdout, os.Stderr)
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	f := register(fs)
	if err := cli.ParseWithEnv(fs, "CLUSTERCONNECT_AGENT", os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg, err := f.config()
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	tp, flush, err := cli.Tracing(ctx, f.otlpEndpoint, "clusterconnect-agent")
	if err != nil {
		return err
	}
	defer flush()
	cfg.TracerProvider = tp
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx) // on SIGTERM: GOAWAY, then in-flight streams finish
}

// config completes the agent's config from the flags that are not its
// fields.
func (f *flags) config() (*agent.Config, error) {
	c := &f.cfg
	if c.RelayURL == "" || c.ClusterID == "" {
		return nil, errors.New("-relay-url and -cluster-id are required (see -h)")
	}
	switch {
	case f.secretFile != "" && f.keyFile == "":
		c.Credential = agent.SecretFile(f.secretFile)
	case f.keyFile != "" && f.secretFile == "":
		k := &agent.KeyFile{Path: f.keyFile, ClusterID: c.ClusterID}
		if f.assertionAud != "" {
			var err error
			if k.Audience, err = tunnel.AssertionAudience(f.assertionAud); err != nil {
				return nil, fmt.Errorf("-assertion-audience: %w", err)
			}
		}
		c.Credential = k
	default:
		return nil, errors.New("give exactly one of -secret-file or -key-file")
	}
	var err error
	if c.Logger, err = cli.Logger(f.logFormat); err != nil {
		return nil, err
	}
	c.Registry = prom.NewRegistry()
	if c.Verifier, err = f.issuer.Verifier(c.Logger, c.Registry); err != nil {
		return nil, err
	}
	if f.kubeconfig != "" {
		if c.RESTConfig, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig); err != nil {
			return nil, fmt.Errorf("-kubeconfig: %w", err)
		}
	}
	m := tokens.EntraMapping()
	if f.issuer.Generic() {
		m = tokens.Mapping{UsernameClaims: []string{"sub"}, GroupsClaims: []string{"groups"}}
	}
	if m.GroupResolver, err = f.graph.Resolver(); err != nil {
		return nil, err
	}
	m.OverageWithoutGroups = f.graph.Mode() == tokenflags.OverageWithoutGroups
	c.Mapping = &m
	if f.relayCA != "" {
		if c.RelayTLS, err = cli.RotatingCA("relay-ca", f.relayCA, c.RelayURL); err != nil {
			return nil, err
		}
	}
	return c, nil
}
