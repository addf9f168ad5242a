package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/kubeconfig"
	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tokens/source"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// warnings logs what goes wrong in the chain, and nothing routine.
var warnings = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// verifier checks tokens from the Entra stand-in, for the relay's front
// door and the agent alike.
func verifier(entra *oidctest.Issuer) (*tokens.Verifier, error) {
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{
		TenantIDs: []string{tenantID}, Audiences: []string{serverApp},
		DiscoveryURL: entra.EntraDiscoveryURL, // the stand-in; real Entra ID needs no override
	})
	if err != nil {
		return nil, err
	}
	return tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: entra.Client()})
}

// startRelay starts the relay with a self-signed certificate and a front
// door that lets the demo group reach the trial cluster and nobody else.
func startRelay(v *tokens.Verifier) (url string, caPEM []byte, stop func(), err error) {
	ca, err := pki.NewCA("clusterconnect trial relay CA")
	if err != nil {
		return "", nil, nil, err
	}
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return "", nil, nil, err
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		return "", nil, nil, err
	}
	policy, err := access.ParsePolicy([]byte(fmt.Sprintf(`{"clusters": {%q: {"groups": [%q]}}}`, clusterID, demoGroup)))
	if err != nil {
		return "", nil, nil, err
	}
	frontDoor, err := access.New(&access.Config{Verifier: v, Policy: policy, Logger: warnings})
	if err != nil {
		return "", nil, nil, err
	}
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{
		Authenticator:    tunnel.SecretAuthenticator{clusterID: "trial-secret"},
		ClientAuthorizer: frontDoor,
	})
	if err != nil {
		return "", nil, nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		return "", nil, nil, err
	}
	srv := &http.Server{Handler: relay, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: tunnel.DefaultMaxHeaderBytes}
	go srv.Serve(ln)
	return "https://" + ln.Addr().String(), ca.CertPEM(), func() { relay.Close(); srv.Close() }, nil
}

func startAgent(rc *rest.Config, v *tokens.Verifier, relayURL string, relayCA []byte) (func(), error) {
	handler, err := impersonate.New(&impersonate.Config{
		RESTConfig: rc, Verifier: v, Mapping: tokens.EntraMapping(), Logger: warnings,
	})
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(relayCA)
	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
		RelayURL: relayURL, ClusterID: clusterID, Credential: tunnel.SecretCredential("trial-secret"),
		Handler: handler, TLSConfig: &tls.Config{RootCAs: roots},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { agent.Run(ctx); close(done) }()
	return func() { cancel(); <-done }, nil
}

// startProxy runs the client proxy with the demo user's token and writes a
// kubeconfig for it.
func startProxy(dir string, port int, relayURL string, relayCA []byte, token string) (string, func(), error) {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(relayCA)
	p, err := clientproxy.New(&clientproxy.Config{
		RelayURL: relayURL, ClusterID: clusterID, RelayTLS: &tls.Config{RootCAs: roots},
		TokenSource: source.Static(token), CertDir: filepath.Join(dir, "proxy"), Logger: warnings,
	})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return "", nil, err
	}
	entry := kubeconfig.ProxyEntry(clusterID, ln.Addr().(*net.TCPAddr).Port, p.CAPEM())
	path := filepath.Join(dir, "proxy.kubeconfig")
	if _, err := kubeconfig.Merge(kubeconfig.Options{Path: path, SetCurrentContext: true}, entry); err != nil {
		ln.Close()
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	return path, func() { cancel(); <-done }, nil
}

// approveSignIns plays the person at the browser: every device-code
// sign-in at the stand-in is approved as the demo user, as if they had
// opened the page and entered the code.
func approveSignIns(ctx context.Context, entra *oidctest.Issuer, claims oidctest.EntraClaims) {
	for {
		login, err := entra.NextDeviceLogin(ctx)
		if err != nil {
			return
		}
		entra.ApproveDevice(login.UserCode, claims)
	}
}

// direct is direct mode's set-up: the proxy binary that kubectl runs for
// tokens, and the kubeconfig it wrote.
type direct struct {
	kubeconfig string
	command    string // the token command, as kubectl runs it
}

// setUpDirect builds the proxy binary, as a user installs it, and runs
// `proxy kubeconfig` to write a direct-mode context that signs in with a
// device code.
func setUpDirect(ctx context.Context, dir, relayURL, relayCAFile string, entra *oidctest.Issuer, entraCAFile string) (*direct, error) {
	bin := filepath.Join(dir, "bin", "clusterconnect-proxy")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/clusterconnect/clusterconnect/examples/proxy")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the proxy binary for direct mode (run the trial from the clusterconnect module): %v\n%s", err, out)
	}
	kc := filepath.Join(dir, "direct.kubeconfig")
	cmd := exec.CommandContext(ctx, bin, "kubeconfig", "-relay-url", relayURL, "-cluster-id", clusterID, "-relay-ca", relayCAFile,
		"-kubeconfig", kc, "-login", "devicecode", "-server-id", serverApp, "-tenant-id", tenantID,
		"-authority-host", entra.AuthorityHost(), "-authority-ca", entraCAFile, "-token-cache-dir", filepath.Join(dir, "tokens"))
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("proxy kubeconfig: %v\n%s", err, out)
	}
	cfg, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		return nil, err
	}
	d := &direct{kubeconfig: kc}
	for _, ai := range cfg.AuthInfos {
		if ai.Exec != nil {
			d.command = strings.Join(append([]string{ai.Exec.Command}, ai.Exec.Args...), " ")
		}
	}
	return d, nil
}
