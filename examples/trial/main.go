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
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

const (
	clusterID = "trial"
	tenantID  = "00000000-0000-4000-8000-00000000c1c1"
	serverApp = "api://clusterconnect-trial"
	demoUser  = "demo@contoso.example"
	demoGroup = "11111111-2222-4333-8444-555555555555" // an Entra group object ID
	demoOID   = "0000aaaa-0000-4000-8000-00000000d3d3"

	// azureCLIClientID is the app that `proxy -login devicecode` signs in
	// as by default, the Azure CLI's.
	azureCLIClientID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
)

func main() {
	port := flag.Int("port", 0, "client proxy port (default: a free one; 47011 is the az connectedk8s default)")
	once := flag.Bool("once", false, "show the demo and exit instead of waiting for Ctrl-C")
	existing := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "connect the cluster of this kubeconfig's current context instead of starting one (default $KUBECONFIG)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: go run ./examples/trial [-port N] [-once]\n\n%s\n", strings.TrimSpace(`
Runs etcd, kube-apiserver, an Entra ID stand-in, the relay, the agent and
the client proxy on this machine, shows kubectl working through them, and
keeps them running until Ctrl-C. The first run builds kube-apiserver and
etcd (about 7 minutes on 2 cores); later runs start in seconds. Needs
kubectl.

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

func run(ctx context.Context, w io.Writer, existing string, port int, once bool) error {
	out := &syncWriter{w: w}
	step := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }
	dir, err := os.MkdirTemp("", "clusterconnect-trial-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var agentConfig *rest.Config
	var demo *cluster
	adminKubeconfig := existing
	if existing != "" {
		step("connecting the cluster of %s (current context)", existing)
		if agentConfig, err = clientcmd.BuildConfigFromFlags("", existing); err != nil {
			return fmt.Errorf("-kubeconfig: %w", err)
		}
	} else {
		step("kube-apiserver %s and etcd %s (built once from the Go module proxy, then cached)", kubetest.KubeVersion, kubetest.EtcdVersion)
		if _, err := kubetest.Build(ctx, os.Stderr, "kube-apiserver"); err != nil {
			return err
		}
		if _, err := kubetest.EtcdPath(); errors.Is(err, kubetest.ErrMissing) && os.Getenv(kubetest.EnvEtcd) == "" {
			if _, err := kubetest.BuildEtcd(ctx, os.Stderr); err != nil {
				return err
			}
		}
		step("starting etcd and kube-apiserver on loopback")
		env, err := kubetest.Start(ctx)
		if err != nil {
			return err
		}
		defer env.Stop()
		step("a stand-in node with pod %s/%s; RBAC: the agent may impersonate, %s (group %s) may view namespaces and edit namespace %s",
			demoNamespace, demoPod, demoUser, demoGroup, demoNamespace)
		if demo, err = setUpCluster(ctx, env); err != nil {
			return err
		}
		defer demo.stop()
		agentConfig = &rest.Config{Host: env.Host, BearerToken: demo.agent.Token, TLSClientConfig: rest.TLSClientConfig{CAData: env.CA.CertPEM()}}
		adminKubeconfig = env.Kubeconfig
	}

	step("Entra ID stand-in (tenant %s, server app %s); it approves device-code sign-ins as %s", tenantID, serverApp, demoUser)
	entra, err := oidctest.Start()
	if err != nil {
		return err
	}
	defer entra.Close()
	entra.AddApp(oidctest.App{ClientID: azureCLIClientID, Tenant: tenantID, Public: true})
	demoClaims := oidctest.EntraClaims{UPN: demoUser, OID: demoOID, Groups: []string{demoGroup}}
	signInCtx, stopSignIns := context.WithCancel(ctx)
	defer stopSignIns()
	go approveSignIns(signInCtx, entra, demoClaims)
	v, err := verifier(entra)
	if err != nil {
		return err
	}

	step("relay on loopback, self-signed, with a front door that lets group %s reach cluster %q", demoGroup, clusterID)
	relayURL, relayCA, stopRelay, err := startRelay(v)
	if err != nil {
		return err
	}
	defer stopRelay()
	relayCAFile, entraCAFile := filepath.Join(dir, "relay-ca.pem"), filepath.Join(dir, "entra-ca.pem")
	if err := writeFiles(map[string][]byte{relayCAFile: relayCA, entraCAFile: entra.CA.CertPEM()}); err != nil {
		return err
	}

	step("agent: dials out to the relay, serves the impersonation handler")
	stopAgent, err := startAgent(agentConfig, v, relayURL, relayCA)
	if err != nil {
		return err
	}
	defer stopAgent()

	step("client proxy, with a token for %s", demoUser)
	demoClaims.Tenant, demoClaims.Audience, demoClaims.Expiry = tenantID, serverApp, time.Now().Add(12*time.Hour)
	token, err := entra.EntraToken(demoClaims)
	if err != nil {
		return err
	}
	proxyKubeconfig, stopProxy, err := startProxy(dir, port, relayURL, relayCA, token)
	if err != nil {
		return err
	}
	defer stopProxy()

	fmt.Fprintln(out, "\n--- Proxy mode: kubectl → client proxy → relay ⇒ agent → kube-apiserver")
	fmt.Fprintln(out)
	sh := &shell{out: out, kubeconfig: proxyKubeconfig}
	if demo != nil {
		err = tour(ctx, sh, demo.webPort)
	} else {
		err = glance(ctx, sh)
	}
	if err != nil {
		return err
	}

	step("direct mode: building the proxy binary, then `proxy kubeconfig -login devicecode`")
	d, err := setUpDirect(ctx, dir, relayURL, relayCAFile, entra, entraCAFile)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "\n--- Direct mode: kubectl → relay ⇒ agent → kube-apiserver; kubectl runs the proxy binary for a token,")
	fmt.Fprintln(out, "    which signs in with a device code once (the stand-in approves it) and caches the token")
	fmt.Fprintln(out)
	sh = &shell{out: out, kubeconfig: d.kubeconfig}
	for _, args := range [][]string{{"auth", "whoami"}, {"get", "pods", "--namespace=" + demoNamespace}} {
		if err := sh.run(ctx, args...); err != nil {
			return err
		}
	}
	if demo != nil {
		if err := sh.run(ctx, "exec", demoPod, "--namespace="+demoNamespace, "--", "hostname"); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, `In your cluster %s has no rights yet; to let it look around:

    kubectl create clusterrolebinding clusterconnect-trial --clusterrole=view --group=%s

`, demoUser, demoGroup)
	}

	fmt.Fprintf(out, `--- What is running
  relay              %s  (CA: %s)
  cluster ID         %s  (requests go to %s/clusters/%s/…)
  Entra stand-in     %s  (CA: %s)
  token command      %s
  proxy mode         export KUBECONFIG=%s
  direct mode        export KUBECONFIG=%s
  admin (no chain)   export KUBECONFIG=%s
`, relayURL, relayCAFile, clusterID, relayURL, clusterID, entra.URL, entraCAFile, d.command, proxyKubeconfig, d.kubeconfig, adminKubeconfig)
	if once {
		return nil
	}
	fmt.Fprintf(out, `
Everything is running. From another terminal, with either KUBECONFIG above, try
the commands shown (the demo user may change namespace %s, and only read the
rest). kubectl's request goes through the relay's front door, down the agent's
tunnel, where the agent checks the token again and asks kube-apiserver as
%s, whose RBAC decides. Press Ctrl-C to stop and remove everything.
`, demoNamespace, demoUser)
	<-ctx.Done()
	step("stopping")
	return nil
}

// glance is the tour for a cluster the trial did not make: reading only.
func glance(ctx context.Context, sh *shell) error {
	for _, args := range [][]string{{"auth", "whoami"}, {"get", "namespaces"}, {"auth", "can-i", "delete", "namespaces"}} {
		if err := sh.run(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

func writeFiles(files map[string][]byte) error {
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
