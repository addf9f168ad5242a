// Command relay is the public side of clusterconnect: agents dial in and
// keep reverse tunnels open; clients reach a cluster under
// https://<relay>/clusters/<cluster-id>/. It parses its flags into a
// relay.Config and runs a relay.Server.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
	"github.com/clusterconnect/clusterconnect/relay"
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
the flags unless the file sets them. "sessionExpiry" says what becomes of
a watch, exec or port-forward when its token expires: "outlive" (the
default) lets it run; "end" ends it then, saying so; "renew" ends it then
unless the client proxy presented a fresh token of the same user (kubectl
talking to the relay directly cannot). The file is re-read when it
changes.

  {"clusters": {
     "prod-eu": {"tenants": ["<tenant ID>"], "groups": ["<group object ID>"]},
     "edge-7":  {"users": ["<user object ID>"], "apps": ["<CI app client ID>"],
                 "limits": {"callerStreams": 50}, "sessionExpiry": "renew"},
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
	f := register(fs)
	if err := cli.ParseWithEnv(fs, "CLUSTERCONNECT_RELAY", os.Args[1:]); err != nil {
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
	tp, flush, err := cli.Tracing(ctx, f.otlpEndpoint, "clusterconnect-relay")
	if err != nil {
		return err
	}
	defer flush()
	cfg.TracerProvider = tp
	srv, err := relay.New(cfg)
	if errors.Is(err, relay.ErrNoPublicURL) {
		return fmt.Errorf("-public-url is required: clusters in %s sign assertions, and each names the relay it is for (the agents' -relay-url)", cfg.AgentsFile)
	}
	if err != nil {
		return err
	}
	return srv.Run(ctx) // on SIGTERM: leave the fleet, drain, close
}
