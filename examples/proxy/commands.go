package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/kubeconfig"
	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
	"github.com/clusterconnect/clusterconnect/sessions/reattach"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

func serve(args []string) error {
	fs, c := flags("serve", relayFlags|clusterFlags|tokenFlags|kubeconfigFlags|serveFlags)
	port := fs.Int("port", kubeconfig.DefaultProxyPort, "port on 127.0.0.1")
	healthListen := fs.String("health-listen", "", "address for the proxy's own /livez, /healthz and /readyz (e.g. 127.0.0.1:47012; default: none)")
	grace := fs.Duration("session-grace", reattach.DefaultGrace, "how long an exec, attach or port-forward tries to re-attach through the relay after its connection is lost, before it ends")
	var otlpEndpoint string
	cli.TracingVar(fs, &otlpEndpoint)
	if ok, err := parse(fs, args); !ok {
		return err
	}
	if *grace <= 0 {
		return fmt.Errorf("-session-grace must be positive, not %v", *grace)
	}
	if err := c.need(); err != nil {
		return err
	}
	log, err := cli.Logger(*c.logFormat)
	if err != nil {
		return err
	}
	cfg := &clientproxy.Config{
		RelayURL: *c.relayURL, ClusterID: *c.clusterID, PassClientToken: *c.passClient, Logger: log,
		ListenAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)),
		Sessions:   reattach.Config{Grace: *grace},
	}
	if !*c.passClient {
		if cfg.TokenSource, err = c.tokens.TokenSource(); err != nil {
			return err
		}
		// Sign in now, where the person who started the proxy is looking,
		// rather than on kubectl's first request.
		if _, err := cfg.TokenSource.Token(); err != nil {
			return err
		}
	} else if *c.all {
		return errors.New("-all asks the relay with your token: it cannot go with -pass-client-token")
	}
	if cfg.RelayTLS, err = c.relayTLS(); err != nil {
		return err
	}
	ids, err := c.clusterIDs(cfg.TokenSource, cfg.RelayTLS)
	if err != nil {
		return err
	}
	cfg.ClusterID = ids[0]
	ctx, stop := cli.SignalContext()
	defer stop()
	tp, flush, err := cli.Tracing(ctx, otlpEndpoint, "clusterconnect-proxy")
	if err != nil {
		return err
	}
	defer flush()
	cfg.TracerProvider = tp
	p, err := clientproxy.New(cfg)
	if err != nil {
		return err
	}
	entries := make([]*kubeconfig.Entry, len(ids))
	for i, id := range ids {
		entries[i] = kubeconfig.ProxyEntry(id, *port, p.CAPEM())
	}
	if err := c.merge(entries...); err != nil {
		return err
	}
	if *healthListen != "" {
		go httpx.ServeSide(ctx, *healthListen, p.HealthHandler(), log, "health")
	}
	log.Info("client proxy listening", "addr", cfg.ListenAddr, "relay", *c.relayURL, "clusters", ids)
	return p.ListenAndServe(ctx)
}

func direct(args []string) error {
	fs, c := flags("kubeconfig", relayFlags|clusterFlags|tokenFlags|kubeconfigFlags)
	execPath := fs.String("exec-path", "", "the proxy binary kubectl runs for tokens (default: this one, which must not be a temporary build)")
	if ok, err := parse(fs, args); !ok {
		return err
	}
	if err := c.need(); err != nil {
		return err
	}
	c.tokens.Complete()
	if err := c.tokens.Validate(); err != nil {
		return err
	}
	ca, err := c.relayCAPEM()
	if err != nil {
		return err
	}
	self, err := pluginPath(*execPath)
	if err != nil {
		return err
	}
	pluginArgs, err := c.tokens.PluginArgs()
	if err != nil {
		return err
	}
	if c.tokens.ClientSecret != "" {
		fmt.Fprintln(os.Stderr, "note: the client secret is not written to the kubeconfig; kubectl's environment must have AZURE_CLIENT_SECRET")
	}
	var src oauth2.TokenSource
	var relayTLS *tls.Config
	if *c.all {
		if src, err = c.tokens.TokenSource(); err != nil {
			return err
		}
		if relayTLS, err = c.relayTLS(); err != nil {
			return err
		}
	}
	ids, err := c.clusterIDs(src, relayTLS)
	if err != nil {
		return err
	}
	entries := make([]*kubeconfig.Entry, len(ids))
	for i, id := range ids {
		if entries[i], err = kubeconfig.DirectEntry(id, *c.relayURL, ca, self, append([]string{"token"}, pluginArgs...)...); err != nil {
			return err
		}
	}
	return c.merge(entries...)
}

func logout(args []string) error {
	fs := flag.NewFlagSet("proxy logout", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage, "\nFlags of logout:\n"); fs.PrintDefaults() }
	dir := fs.String("token-cache-dir", "", "the token cache to clear (default: the user cache dir's clusterconnect/tokens)")
	if ok, err := parse(fs, args); !ok {
		return err
	}
	cache := &source.DiskCache{Dir: *dir}
	n, err := cache.Clear()
	if err != nil {
		return err
	}
	where := *dir
	if where == "" {
		where, _ = source.DefaultCacheDir()
	}
	fmt.Fprintf(os.Stderr, "removed %d cached token(s) from %s\n", n, where)
	return nil
}
