// Command agent runs inside the cluster: it dials out to the relay, keeps
// reverse tunnels open, and serves every request that arrives through them
// with the token-to-impersonation handler in front of the API server.
package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/internal/cli"
	"github.com/clusterconnect/clusterconnect/internal/prom"
	"github.com/clusterconnect/clusterconnect/internal/tokenflags"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

const usage = `Usage: agent [flags]

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

func run() error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	relayURL := fs.String("relay-url", "", "the relay, https://host[:port] (required)")
	clusterID := fs.String("cluster-id", "", "this cluster's ID at the relay (required)")
	secretFile := fs.String("secret-file", "", "file holding the cluster's shared secret")
	keyFile := fs.String("key-file", "", "PEM private key to sign assertions with, instead of a secret")
	assertionAudience := fs.String("assertion-audience", "", "with -key-file: the relay named in assertions, as the relay's -public-url (default: from -relay-url)")
	relayCA := fs.String("relay-ca", "", "PEM CA file for the relay's certificate (default: system roots)")
	connections := fs.Int("connections", 2, "tunnel connections to keep open")
	kubeconfigPath := fs.String("kubeconfig", "", "kubeconfig for the API server (default: in-cluster service account)")
	issuerFlags := tokenflags.Register(fs)
	graphFlags := tokenflags.RegisterGraph(fs, tokenflags.OverageRefuse, tokenflags.OverageGraph, tokenflags.OverageWithoutGroups)
	passThrough := fs.Bool("pass-through-foreign-tokens", false, "send tokens of other issuers (service accounts) to the API server untouched")
	nested := fs.Bool("allow-nested-impersonation", false, "honour callers' --as/--as-group when RBAC allows them to impersonate")
	healthListen := fs.String("health-listen", ":8081", "address for /livez, /healthz, /readyz and /metrics")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	keyWait := fs.Duration("wait-for-keys", 30*time.Second, "how long to wait for the issuers' keys before connecting to the relay (0: connect at once)")
	if err := cli.ParseWithEnv(fs, "CLUSTERCONNECT_AGENT", os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := cli.Logger(*logFormat)
	if err != nil {
		return err
	}
	if *relayURL == "" || *clusterID == "" {
		return errors.New("-relay-url and -cluster-id are required (see -h)")
	}
	cred, err := credential(*secretFile, *keyFile, *clusterID, *assertionAudience)
	if err != nil {
		return err
	}
	reg := cli.NewRegistry()
	verifier, err := issuerFlags.Verifier(log, reg)
	if err != nil {
		return err
	}
	var rc *rest.Config
	if *kubeconfigPath != "" {
		if rc, err = clientcmd.BuildConfigFromFlags("", *kubeconfigPath); err != nil {
			return fmt.Errorf("-kubeconfig: %w", err)
		}
	}
	m := mapping(issuerFlags.Generic())
	if m.GroupResolver, err = graphFlags.Resolver(); err != nil {
		return err
	}
	m.OverageWithoutGroups = graphFlags.Mode() == tokenflags.OverageWithoutGroups
	handler, err := impersonate.New(&impersonate.Config{
		RESTConfig: rc, Verifier: verifier, Mapping: m,
		PassThroughForeignTokens: *passThrough, AllowNestedImpersonation: *nested, Logger: log,
	})
	if err != nil {
		return err
	}
	tlsConfig := &tls.Config{}
	if *relayCA != "" {
		if tlsConfig.RootCAs, err = cli.CertPool("relay-ca", *relayCA); err != nil {
			return err
		}
	}
	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
		Registerer: reg,
		RelayURL:   *relayURL, ClusterID: *clusterID, Credential: cred, Handler: handler,
		TLSConfig: tlsConfig, Connections: *connections, Logger: log,
	})
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	mux := http.NewServeMux()
	mux.Handle("/healthz", handler.Healthz())
	mux.Handle("/livez", handler.Healthz())
	mux.Handle("/readyz", handler.Readyz())
	mux.Handle("/metrics", prom.Handler(reg))
	go cli.Serve(ctx, *healthListen, mux, log, "health")

	if *keyWait > 0 {
		waitForKeys(ctx, verifier, *keyWait, log)
	}
	log.Info("agent starting", "relay", *relayURL, "cluster", *clusterID)
	err = agent.Run(ctx) // on SIGTERM: GOAWAY, then in-flight streams finish
	log.Info("agent stopped")
	return err
}

func credential(secretFile, keyFile, clusterID, audience string) (tunnel.Credential, error) {
	switch {
	case secretFile != "" && keyFile == "":
		b, err := cli.ReadFileFlag("secret-file", secretFile)
		if err != nil {
			return nil, err
		}
		return tunnel.SecretCredential(strings.TrimSpace(string(b))), nil
	case keyFile != "" && secretFile == "":
		b, err := cli.ReadFileFlag("key-file", keyFile)
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("-key-file %s is not PEM", keyFile)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			if k, err = x509.ParseECPrivateKey(blk.Bytes); err != nil {
				return nil, fmt.Errorf("-key-file %s: not a PKCS #8 or EC private key", keyFile)
			}
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("-key-file %s: not a signing key", keyFile)
		}
		if audience != "" {
			if audience, err = tunnel.AssertionAudience(audience); err != nil {
				return nil, fmt.Errorf("-assertion-audience: %w", err)
			}
		}
		return &tunnel.AssertionCredential{ClusterID: clusterID, Key: signer, Audience: audience}, nil
	}
	return nil, errors.New("give exactly one of -secret-file or -key-file")
}

func mapping(generic bool) tokens.Mapping {
	if generic {
		return tokens.Mapping{UsernameClaims: []string{"sub"}, GroupsClaims: []string{"groups"}}
	}
	return tokens.EntraMapping()
}

// waitForKeys fetches the issuers' keys before the agent connects, for up
// to limit: an agent that took requests first would answer each with 503
// until its keys came, and a second replica started under load did just
// that. Past limit it connects anyway, and keeps trying in the background
// as requests come.
func waitForKeys(ctx context.Context, v *tokens.Verifier, limit time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		err := v.Ready(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			log.Warn("issuer keys not fetched; connecting anyway", "err", err)
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}
