// Command proxy is the client proxy on the user's machine, what
// az connectedk8s proxy does: it writes a kubeconfig context and forwards
// kubectl's requests to the relay with the user's token.
//
//	proxy serve      -relay-url … -cluster-id … -token-command "az account get-access-token …"
//	proxy kubeconfig -relay-url … -cluster-id … -token-command …   (direct mode, no local process)
//	proxy token      -token-command …                              (the exec credential plugin)
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
	"github.com/clusterconnect/clusterconnect/kubeconfig"
	"github.com/clusterconnect/clusterconnect/tokens/login"
)

const usage = `Usage: proxy [serve|kubeconfig|clusters|token|logout] [flags]

  serve       run the client proxy on 127.0.0.1 and merge a kubeconfig
              context pointing at it (the default)
  kubeconfig  merge a direct-mode context instead: kubectl talks to the relay
              and runs "proxy token" for the token; no process keeps running
  clusters    list the clusters the relay lets you reach, and whether each
              is connected
  token       print an ExecCredential for kubectl (used by direct mode)
  logout      delete the tokens kept on disk

serve and kubeconfig take -all instead of -cluster-id: a context for every
cluster "proxy clusters" lists, all served by one client proxy.

The token comes from signing in (-login, as kubelogin does):
  -login interactive       a person signs in in this machine's browser (the
                           default; device code where no browser can open)
  -login devicecode        a person signs in in a browser with a code
  -login spn               a service principal: -client-secret or -client-certificate
  -login workloadidentity  a federated token: AZURE_FEDERATED_TOKEN_FILE, or
                           GitHub Actions' OIDC token (permissions: id-token: write)
  -login msi               this Azure machine's managed identity
                           (-client-id for a user-assigned one)
  -login azurecli          az account get-access-token
each with -server-id (the cluster's server app) and, except msi and
azurecli, -tenant-id and -client-id (AZURE_TENANT_ID, AZURE_CLIENT_ID). Tokens are
kept on disk (0600) and refreshed before they expire, so each kubectl call
does not sign in again.

Or from -token, -token-file (re-read when it changes) or -token-command
(run when the token is about to expire).
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		if err != errSaid {
			fmt.Fprintln(os.Stderr, "proxy:", err)
		}
		os.Exit(1)
	}
}

type common struct {
	relayURL, clusterID, relayCA  *string
	tokens                        *login.Options // nil without tokenFlags
	kubeconfigPath, context       *string
	setCurrent, passClient, noCfg *bool
	all                           *bool
	logFormat                     *string
}

// Flag groups: each subcommand registers, and -h lists, only the flags it
// reads.
const (
	relayFlags      = 1 << iota // which relay
	clusterFlags                // which cluster, or all
	tokenFlags                  // where the user's token comes from
	kubeconfigFlags             // where the context is written
	serveFlags                  // the running proxy's own
)

func flags(name string, groups int) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet("proxy "+name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage, "\nFlags of "+name+":\n"); fs.PrintDefaults() }
	// A flag outside the subcommand's groups is not registered and keeps
	// its default.
	str := func(g int, name, def, help string) *string {
		if groups&g == 0 {
			return &def
		}
		return fs.String(name, def, help)
	}
	boolean := func(g int, name string, def bool, help string) *bool {
		if groups&g == 0 {
			return &def
		}
		return fs.Bool(name, def, help)
	}
	c := &common{
		relayURL:       str(relayFlags, "relay-url", "", "the relay, https://host[:port]"),
		clusterID:      str(clusterFlags, "cluster-id", "", "the cluster's ID at the relay"),
		all:            boolean(clusterFlags, "all", false, "a context for every cluster the relay lets you reach (see proxy clusters); with -cluster-id, that one is the first"),
		relayCA:        str(relayFlags, "relay-ca", "", "PEM CA file for the relay, read again when it changes (default: system roots)"),
		kubeconfigPath: str(kubeconfigFlags, "kubeconfig", "", `kubeconfig to merge into (default: as kubectl; "-" prints it)`),
		context:        str(kubeconfigFlags, "context", "", "context name (default: the cluster ID)"),
		setCurrent:     boolean(kubeconfigFlags, "set-current-context", true, "make the context current"),
		noCfg:          boolean(kubeconfigFlags, "no-kubeconfig", false, "do not write a kubeconfig"),
		passClient:     boolean(serveFlags, "pass-client-token", false, "forward kubectl's own token (service-account tokens) instead of -token*"),
		logFormat:      str(serveFlags, "log-format", "text", "log format: text or json"),
	}
	if groups&tokenFlags != 0 {
		c.tokens = &login.Options{}
		c.tokens.AddFlags(fs)
	}
	return fs, c
}

func run(args []string) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args)
	case "kubeconfig":
		return direct(args)
	case "clusters":
		return clusters(args)
	case "token":
		return token(args)
	case "logout":
		return logout(args)
	case "help":
		fmt.Print(usage)
		return nil
	}
	return fmt.Errorf("unknown command %q (serve, kubeconfig, clusters, token or logout)", cmd)
}

func parse(fs *flag.FlagSet, args []string) (bool, error) {
	err := cli.ParseWithEnv(fs, "CLUSTERCONNECT_PROXY", args)
	if errors.Is(err, flag.ErrHelp) {
		return false, nil
	}
	return err == nil, err
}

func (c *common) need() error {
	if *c.relayURL == "" || (*c.clusterID == "" && !*c.all) {
		return errors.New("-relay-url and -cluster-id (or -all) are required")
	}
	if *c.all && *c.context != "" {
		return errors.New("-context names one context; with -all each is named after its cluster")
	}
	return nil
}

// relayTLS verifies the relay with -relay-ca, read again when it
// changes; nil (the system roots) without it.
func (c *common) relayTLS() (*tls.Config, error) {
	if *c.relayCA == "" {
		return nil, nil
	}
	return cli.RotatingCA("relay-ca", *c.relayCA, *c.relayURL)
}

func (c *common) relayCAPEM() ([]byte, error) {
	if *c.relayCA == "" {
		return nil, nil
	}
	return cli.CertPEM("relay-ca", *c.relayCA)
}

func (c *common) merge(es ...*kubeconfig.Entry) error {
	if *c.noCfg {
		return nil
	}
	if *c.context != "" && len(es) == 1 {
		es[0].Name, es[0].ClusterName, es[0].UserName = *c.context, *c.context, *c.context
	}
	path, err := kubeconfig.Merge(kubeconfig.Options{
		Path: *c.kubeconfigPath, SetCurrentContext: *c.setCurrent,
		Warnf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "warning: "+f+"\n", a...) },
	}, es...)
	if err != nil {
		return err
	}
	if path != "-" {
		for _, e := range es {
			fmt.Fprintf(os.Stderr, "kubeconfig %s: context %q\n", path, e.Name)
		}
	}
	return nil
}
