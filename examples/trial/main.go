// Command trial runs the whole clusterconnect chain on one machine:
//
//	kubectl → client proxy → relay ⇐ reverse tunnel ⇐ agent → impersonation → kube-apiserver
//
// with a real etcd and kube-apiserver (built once from the Go module proxy
// and cached), an Entra ID stand-in that mints a token for a demo user, and
// relay, agent and client proxy on loopback. It shows kubectl working
// through the chain, then keeps everything running until Ctrl-C so you can
// try it from another terminal.
//
//	go run ./examples/trial
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/internal/kubetest"
	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/kubeconfig"
	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tokens/source"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

const (
	clusterID = "trial"
	tenantID  = "00000000-0000-4000-8000-00000000c1c1"
	serverApp = "api://clusterconnect-trial"
	demoUser  = "demo@contoso.example"
	demoGroup = "11111111-2222-4333-8444-555555555555" // an Entra group object ID
)

func main() {
	port := flag.Int("port", 0, "client proxy port (default: a free one; 47011 is the az connectedk8s default)")
	once := flag.Bool("once", false, "show the demo and exit instead of waiting for Ctrl-C")
	existing := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "connect the cluster of this kubeconfig's current context instead of starting one (default $KUBECONFIG)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: go run ./examples/trial [-port N] [-once]\n\n%s\n", strings.TrimSpace(`
Runs etcd, kube-apiserver, an Entra ID stand-in, the relay, the agent and
the client proxy on this machine, shows kubectl working through them, and
keeps them running until Ctrl-C. The first run builds kube-apiserver
(about 6 minutes on 2 cores); later runs start in seconds. Needs etcd
(Debian: apt-get install etcd-server) and kubectl.

With -kubeconfig (or $KUBECONFIG) it connects that cluster instead: the
agent acts with the kubeconfig's credentials, which must be allowed to
impersonate. Nothing is created in that cluster.`))
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, *existing, *port, *once); err != nil {
		fmt.Fprintln(os.Stderr, "trial:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, existing string, port int, once bool) error {
	step := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }
	var agentConfig *rest.Config
	if existing != "" {
		step("connecting the cluster of %s (current context)", existing)
		var err error
		if agentConfig, err = clientcmd.BuildConfigFromFlags("", existing); err != nil {
			return fmt.Errorf("-kubeconfig: %w", err)
		}
	} else {
		step("kube-apiserver %s (built once from the Go module proxy, then cached)", kubetest.KubeVersion)
		if _, err := kubetest.Build(ctx, os.Stderr, "kube-apiserver"); err != nil {
			return err
		}
		step("starting etcd and kube-apiserver on loopback")
		env, err := kubetest.Start(ctx)
		if err != nil {
			if errors.Is(err, kubetest.ErrMissing) {
				return fmt.Errorf("%w\n(etcd comes from Debian's etcd-server package: apt-get install etcd-server)", err)
			}
			return err
		}
		defer env.Stop()
		step("RBAC: the agent may impersonate; %s (group %s) may view namespaces and pods", demoUser, demoGroup)
		sa, err := setUpRBAC(ctx, env)
		if err != nil {
			return err
		}
		agentConfig = &rest.Config{Host: env.Host, BearerToken: sa.Token, TLSClientConfig: rest.TLSClientConfig{CAData: env.CA.CertPEM()}}
	}

	step("Entra ID stand-in (issues tokens for tenant %s, app %s)", tenantID, serverApp)
	entra, err := oidctest.Start()
	if err != nil {
		return err
	}
	defer entra.Close()

	step("relay on loopback, with a self-signed certificate")
	relayURL, relayCA, stopRelay, err := startRelay()
	if err != nil {
		return err
	}
	defer stopRelay()

	step("agent: dials out to the relay, serves the impersonation handler")
	stopAgent, err := startAgent(agentConfig, entra, relayURL, relayCA)
	if err != nil {
		return err
	}
	defer stopAgent()

	step("client proxy for %s, with a token for %s", demoUser, clusterID)
	token, err := entra.EntraToken(oidctest.EntraClaims{
		Tenant: tenantID, Audience: serverApp, UPN: demoUser, OID: "0000aaaa-0000-4000-8000-00000000d3d3",
		Groups: []string{demoGroup}, Expiry: time.Now().Add(12 * time.Hour),
	})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "clusterconnect-trial-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kubeconfigPath, stopProxy, err := startProxy(dir, port, relayURL, relayCA, token)
	if err != nil {
		return err
	}
	defer stopProxy()

	fmt.Fprintln(out)
	for _, args := range [][]string{{"auth", "whoami"}, {"get", "namespaces"}, {"auth", "can-i", "delete", "namespaces"}} {
		if err := kubectl(ctx, out, kubeconfigPath, args...); err != nil {
			return err
		}
	}
	if existing != "" {
		fmt.Fprintf(out, `
In your cluster %s has no rights yet; to let it look around:

    kubectl create clusterrolebinding clusterconnect-trial --clusterrole=view --group=%s
`, demoUser, demoGroup)
	}
	if once {
		return nil
	}
	fmt.Fprintf(out, `
Everything is running. From another terminal:

    export KUBECONFIG=%s
    kubectl get namespaces
    kubectl auth whoami

kubectl talks to the client proxy, which adds the demo user's token; the relay
sends the request down the agent's tunnel; the agent checks the token and asks
kube-apiserver as %s, whose RBAC decides. Press Ctrl-C to stop.
`, kubeconfigPath, demoUser)
	<-ctx.Done()
	step("stopping")
	return nil
}

func setUpRBAC(ctx context.Context, env *kubetest.Env) (*kubetest.ServiceAccount, error) {
	sa, err := env.CreateServiceAccount(ctx, "clusterconnect", "agent")
	if err != nil {
		return nil, err
	}
	err = env.Grant(ctx, "clusterconnect-agent-impersonate", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"users", "groups"}, Verbs: []string{"impersonate"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"uids", "userextras/clusterconnect.io/oid", "userextras/clusterconnect.io/tid"}, Verbs: []string{"impersonate"}},
	}, sa.Subject())
	if err != nil {
		return nil, err
	}
	err = env.Grant(ctx, "trial-viewers", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces", "pods"}, Verbs: []string{"get", "list", "watch"}},
	}, kubetest.Group(demoGroup))
	if err != nil {
		return nil, err
	}
	return sa, waitForGrant(ctx, env)
}

// waitForGrant waits until the API server's authorizer has seen the demo
// group's binding (it learns of bindings through a watch).
func waitForGrant(ctx context.Context, env *kubetest.Env) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: demoUser, Groups: []string{demoGroup},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Resource: "namespaces"},
	}}
	for {
		res, err := env.Client().AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err == nil && res.Status.Allowed {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the demo user's RBAC binding never took effect: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func startRelay() (url string, caPEM []byte, stop func(), err error) {
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
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{clusterID: "trial-secret"}})
	if err != nil {
		return "", nil, nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		return "", nil, nil, err
	}
	srv := &http.Server{Handler: relay, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "https://" + ln.Addr().String(), ca.CertPEM(), func() { relay.Close(); srv.Close() }, nil
}

func startAgent(rc *rest.Config, entra *oidctest.Issuer, relayURL string, relayCA []byte) (func(), error) {
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{
		TenantIDs: []string{tenantID}, Audiences: []string{serverApp},
		DiscoveryURL: entra.EntraDiscoveryURL, // the stand-in; real Entra ID needs no override
	})
	if err != nil {
		return nil, err
	}
	verifier, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: entra.Client()})
	if err != nil {
		return nil, err
	}
	handler, err := impersonate.New(&impersonate.Config{
		RESTConfig: rc,
		Verifier:   verifier,
		Mapping:    tokens.EntraMapping(),
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
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

func startProxy(dir string, port int, relayURL string, relayCA []byte, token string) (string, func(), error) {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(relayCA)
	p, err := clientproxy.New(&clientproxy.Config{
		RelayURL: relayURL, ClusterID: clusterID, RelayTLS: &tls.Config{RootCAs: roots},
		TokenSource: source.Static(token), CertDir: filepath.Join(dir, "proxy"),
	})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return "", nil, err
	}
	entry := kubeconfig.ProxyEntry(clusterID, ln.Addr().(*net.TCPAddr).Port, p.CAPEM())
	path := filepath.Join(dir, "kubeconfig")
	if _, err := kubeconfig.Merge(kubeconfig.Options{Path: path, SetCurrentContext: true}, entry); err != nil {
		ln.Close()
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	return path, func() { cancel(); <-done }, nil
}

func kubectl(ctx context.Context, out io.Writer, kubeconfigPath string, args ...string) error {
	bin, err := kubetest.KubectlPath()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "$ kubectl %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigPath)
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	fmt.Fprintln(out)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return nil // kubectl said why (auth can-i answers "no" with exit 1)
	}
	return err
}
