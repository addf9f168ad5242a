// Command agent runs inside the cluster: it dials out to the relay, keeps
// reverse tunnels open, and serves every request that arrives through them
// with the token-to-impersonation handler in front of the API server.
package main

import (
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
	tenants := fs.String("tenant", "", "comma-separated Entra ID tenant IDs allowed")
	audiences := fs.String("audience", "", "comma-separated audiences (server app client ID, Application ID URI)")
	cloud := fs.String("cloud", "public", "Entra ID cloud: public, usgov or china")
	entraDiscovery := fs.String("entra-discovery-base", "", "fetch Entra discovery documents from this base URL instead (mirrors, tests)")
	issuer := fs.String("issuer", "", "a generic OIDC issuer URL, instead of Entra ID")
	issuerCA := fs.String("issuer-ca", "", "PEM CA file for the token issuer's HTTPS (default: system roots)")
	passThrough := fs.Bool("pass-through-foreign-tokens", false, "send tokens of other issuers (service accounts) to the API server untouched")
	nested := fs.Bool("allow-nested-impersonation", false, "honour callers' --as/--as-group when RBAC allows them to impersonate")
	healthListen := fs.String("health-listen", ":8081", "address for /healthz, /readyz and /metrics")
	logFormat := fs.String("log-format", "text", "log format: text or json")
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
	verifier, err := newVerifier(*tenants, *audiences, *cloud, *entraDiscovery, *issuer, *issuerCA, log)
	if err != nil {
		return err
	}
	var rc *rest.Config
	if *kubeconfigPath != "" {
		if rc, err = clientcmd.BuildConfigFromFlags("", *kubeconfigPath); err != nil {
			return fmt.Errorf("-kubeconfig: %w", err)
		}
	}
	handler, err := impersonate.New(&impersonate.Config{
		RESTConfig: rc, Verifier: verifier, Mapping: mapping(*issuer),
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
		RelayURL: *relayURL, ClusterID: *clusterID, Credential: cred, Handler: handler,
		TLSConfig: tlsConfig, Connections: *connections, Logger: log,
	})
	if err != nil {
		return err
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	mux := http.NewServeMux()
	mux.Handle("/healthz", handler.Healthz())
	mux.Handle("/readyz", handler.Readyz())
	mux.Handle("/metrics", cli.Metrics(func() []cli.Counter { return cli.TunnelCounters("clusterconnect_agent", agent.Stats()) }))
	go cli.Serve(ctx, *healthListen, mux, log, "health")

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

func newVerifier(tenants, audiences, cloud, entraDiscovery, issuer, issuerCA string, log *slog.Logger) (*tokens.Verifier, error) {
	auds := split(audiences)
	if len(auds) == 0 {
		return nil, errors.New("-audience is required: the token audience this cluster accepts")
	}
	var issuers []tokens.Issuer
	switch {
	case issuer != "":
		issuers = []tokens.Issuer{{URL: issuer, Audiences: auds}}
	case tenants != "":
		clouds := map[string]tokens.Cloud{"public": tokens.AzurePublic, "usgov": tokens.AzureUSGovernment, "china": tokens.AzureChina}
		c, ok := clouds[cloud]
		if !ok {
			return nil, fmt.Errorf("-cloud %q: use public, usgov or china", cloud)
		}
		ec := tokens.EntraConfig{TenantIDs: split(tenants), Audiences: auds, Cloud: c}
		if entraDiscovery != "" {
			base := strings.TrimSuffix(entraDiscovery, "/")
			ec.DiscoveryURL = func(tid string, version int) string {
				if version == 1 {
					return base + "/" + tid + "/.well-known/openid-configuration"
				}
				return base + "/" + tid + "/v2.0/.well-known/openid-configuration"
			}
		}
		var err error
		if issuers, err = tokens.EntraIssuers(ec); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("give -tenant (Entra ID) or -issuer (other OIDC)")
	}
	cfg := &tokens.Config{Issuers: issuers, Logger: log}
	if issuerCA != "" {
		roots, err := cli.CertPool("issuer-ca", issuerCA)
		if err != nil {
			return nil, err
		}
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	}
	return tokens.NewVerifier(cfg)
}

func mapping(issuer string) tokens.Mapping {
	if issuer != "" {
		return tokens.Mapping{UsernameClaims: []string{"sub"}, GroupsClaims: []string{"groups"}}
	}
	return tokens.EntraMapping()
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
