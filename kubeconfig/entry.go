package kubeconfig

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// DefaultProxyPort is the client proxy's default port, as az connectedk8s
// proxy uses.
const DefaultProxyPort = 47011

// ProxyTokenPlaceholder is the token a proxy-mode kubeconfig carries. The
// client proxy replaces whatever credential kubectl sends with the user's
// real token; the placeholder only keeps kubectl from prompting.
const ProxyTokenPlaceholder = "clusterconnect-client-proxy"

// Entry is one cluster's cluster, user and context entries.
type Entry struct {
	// Name of the context; the cluster and user entries take it too unless
	// ClusterName or UserName are set.
	Name        string
	ClusterName string
	UserName    string
	// Server is the API server URL kubectl uses.
	Server string
	// CAData is the PEM CA that signed Server's certificate; nil means the
	// system roots.
	CAData []byte
	// Namespace for the context; empty leaves kubectl's default.
	Namespace string
	// Token or Exec is the user's credential (exactly one).
	Token string
	Exec  *clientcmdapi.ExecConfig
}

// ProxyEntry is the entry for proxy mode: kubectl talks to the local client
// proxy on 127.0.0.1:port, which adds the user's token and forwards to the
// relay. caPEM is the client proxy's CA. The server URL names the cluster
// (/clusters/{id}), so that one client proxy serves a context per cluster.
func ProxyEntry(clusterID string, port int, caPEM []byte) *Entry {
	if port == 0 {
		port = DefaultProxyPort
	}
	return &Entry{
		Name:   clusterID,
		Server: "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/clusters/" + url.PathEscape(clusterID),
		CAData: caPEM,
		Token:  ProxyTokenPlaceholder,
	}
}

// DirectEntry is the entry for direct mode: kubectl talks to the relay's
// route for the cluster, and an exec credential plugin (command and args,
// e.g. the proxy binary's "token" subcommand) prints the user's token, so no
// local process runs between kubectl and the relay. caPEM is the relay's CA,
// nil for the system roots.
func DirectEntry(clusterID, relayURL string, caPEM []byte, command string, args ...string) (*Entry, error) {
	u, err := url.Parse(relayURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("kubeconfig: relay URL %q must be https://host[:port]", relayURL)
	}
	u.Path = "/clusters/" + clusterID
	return &Entry{
		Name:   clusterID,
		Server: u.String(),
		CAData: caPEM,
		Exec: &clientcmdapi.ExecConfig{
			APIVersion:         "client.authentication.k8s.io/v1",
			Command:            command,
			Args:               args,
			InteractiveMode:    clientcmdapi.NeverExecInteractiveMode,
			ProvideClusterInfo: true, // the plugin asks the relay (at the server) for claims challenges
		},
	}, nil
}

func (e *Entry) names() (cluster, user string) {
	cluster, user = e.ClusterName, e.UserName
	if cluster == "" {
		cluster = e.Name
	}
	if user == "" {
		user = e.Name
	}
	return cluster, user
}

// apply puts the entry into cfg, replacing entries of the same names.
func (e *Entry) apply(cfg *clientcmdapi.Config) error {
	if e.Name == "" {
		return errors.New("kubeconfig: entry has no name")
	}
	if (e.Token == "") == (e.Exec == nil) {
		return fmt.Errorf("kubeconfig: entry %q needs exactly one of a token or an exec plugin", e.Name)
	}
	cluster, user := e.names()
	c := clientcmdapi.NewCluster()
	c.Server = e.Server
	c.CertificateAuthorityData = e.CAData
	cfg.Clusters[cluster] = c
	a := clientcmdapi.NewAuthInfo()
	a.Token = e.Token
	a.Exec = e.Exec
	cfg.AuthInfos[user] = a
	ctx := clientcmdapi.NewContext()
	ctx.Cluster, ctx.AuthInfo, ctx.Namespace = cluster, user, e.Namespace
	cfg.Contexts[e.Name] = ctx
	return nil
}

// Generate returns a new kubeconfig holding the entries, with the first as
// current context, validated as clientcmd validates it.
func Generate(entries ...*Entry) (*clientcmdapi.Config, error) {
	cfg := clientcmdapi.NewConfig()
	for _, e := range entries {
		if err := e.apply(cfg); err != nil {
			return nil, err
		}
	}
	if len(entries) > 0 {
		cfg.CurrentContext = entries[0].Name
	}
	if err := clientcmd.Validate(*cfg); err != nil {
		return nil, fmt.Errorf("kubeconfig: generated config is not valid: %w", err)
	}
	return cfg, nil
}
