package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
)

// clusters prints the clusters the relay lets the user reach.
func clusters(args []string) error {
	fs, c := flags("clusters", relayFlags|tokenFlags)
	if ok, err := parse(fs, args); !ok {
		return err
	}
	if *c.relayURL == "" {
		return errors.New("-relay-url is required")
	}
	src, err := c.tokens.TokenSource()
	if err != nil {
		return err
	}
	relayTLS, err := c.relayTLS()
	if err != nil {
		return err
	}
	list, err := c.list(src, relayTLS)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(os.Stderr, errNoCluster)
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tCONNECTED")
	for _, cl := range list {
		connected := "no"
		if cl.Connected {
			connected = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\n", cl.ID, connected)
	}
	return tw.Flush()
}

// errNoCluster is what a user the relay lets reach nothing is told.
var errNoCluster = errors.New("the relay lets you reach no cluster: ask its operator to add you to a cluster's access policy")

// clusterIDs are the clusters to write contexts for: -cluster-id, or with
// -all every cluster the relay lets src's caller reach, -cluster-id first.
func (c *common) clusterIDs(src oauth2.TokenSource, relayTLS *tls.Config) ([]string, error) {
	if !*c.all {
		return []string{*c.clusterID}, nil
	}
	list, err := c.list(src, relayTLS)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, cl := range list {
		if cl.ID != *c.clusterID {
			ids = append(ids, cl.ID)
		}
	}
	if *c.clusterID != "" {
		ids = append([]string{*c.clusterID}, ids...)
	}
	if len(ids) == 0 {
		return nil, errNoCluster
	}
	return ids, nil
}

// list asks the relay for the clusters src's caller may reach.
func (c *common) list(src oauth2.TokenSource, relayTLS *tls.Config) ([]access.ClusterStatus, error) {
	ctx, stop := cli.SignalContext()
	defer stop()
	return clientproxy.ListClusters(ctx, *c.relayURL, relayTLS, src)
}
