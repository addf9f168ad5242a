package login

import (
	"flag"
	"path/filepath"
	"strings"
)

// AddFlags registers the options as flags on fs, under the names
// PluginArgs writes and kubelogin uses.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Token, "token", "", "a static token")
	fs.StringVar(&o.TokenFile, "token-file", "", "file holding the token")
	fs.StringVar(&o.TokenCommand, "token-command", "", "command printing the token (plain, az JSON, or ExecCredential)")
	fs.StringVar(&o.Mode, "login", "", "sign in without another CLI: "+strings.Join(Modes(), ", "))
	fs.StringVar(&o.ServerID, "server-id", "", "the cluster's server app: its application ID URI or client ID (scope <server-id>/.default)")
	fs.StringVar(&o.TenantID, "tenant-id", "", "Entra tenant ID (default $AZURE_TENANT_ID)")
	fs.StringVar(&o.ClientID, "client-id", "", "app that signs in (default $AZURE_CLIENT_ID; for devicecode the Azure CLI's app)")
	fs.StringVar(&o.ClientSecret, "client-secret", "", "spn: the client secret (default $AZURE_CLIENT_SECRET; never written to a kubeconfig)")
	fs.StringVar(&o.ClientCertificate, "client-certificate", "", "spn: PEM file with the certificate and its key (default $AZURE_CLIENT_CERTIFICATE_PATH)")
	fs.StringVar(&o.FederatedTokenFile, "federated-token-file", "", "workloadidentity: federated token file (default $AZURE_FEDERATED_TOKEN_FILE, else GitHub Actions' OIDC token)")
	fs.StringVar(&o.Cloud, "cloud", "public", "Entra ID cloud to sign in to: public, usgov or china")
	fs.StringVar(&o.AuthorityHost, "authority-host", "", "Entra sign-in host, overriding -cloud (default $AZURE_AUTHORITY_HOST)")
	fs.StringVar(&o.AuthorityCA, "authority-ca", "", "PEM CA file for the sign-in host (default: system roots)")
	fs.StringVar(&o.CacheDir, "token-cache-dir", "", "where signed-in tokens are kept, 0600 (default: the user cache dir's clusterconnect/tokens)")
	fs.BoolVar(&o.NoCache, "no-token-cache", false, "keep no token on disk: every process signs in or runs -token-command again")
	fs.StringVar(&o.PoPHost, "pop-host", "", "proof of possession: sign each use of the token for this host (Arc: the cluster's ARM ID), as kubelogin --pop-enabled --pop-claims u=… does")
}

// PluginArgs are the options as flags for an exec credential plugin that
// registers them with AddFlags (the proxy's `token`): files by absolute
// path, since kubectl runs the plugin from anywhere, and no client
// secret, which the plugin reads from its environment. Call Complete and
// Validate first.
func (o *Options) PluginArgs() ([]string, error) {
	var args []string
	add := func(name, value string) {
		if value != "" {
			args = append(args, "-"+name, value)
		}
	}
	add("token", o.Token)
	add("token-command", o.TokenCommand)
	cloud := o.Cloud
	if cloud == "public" {
		cloud = "" // the plugin's default
	}
	for _, f := range []struct{ name, value string }{{"login", o.Mode}, {"cloud", cloud}, {"pop-host", o.PoPHost}, {"server-id", o.ServerID},
		{"tenant-id", o.TenantID}, {"client-id", o.ClientID}, {"authority-host", o.AuthorityHost}} {
		add(f.name, f.value)
	}
	for _, f := range []struct{ name, value string }{{"token-file", o.TokenFile}, {"authority-ca", o.AuthorityCA},
		{"client-certificate", o.ClientCertificate}, {"federated-token-file", o.FederatedTokenFile}, {"token-cache-dir", o.CacheDir}} {
		if f.value == "" {
			continue
		}
		p, err := filepath.Abs(f.value)
		if err != nil {
			return nil, err
		}
		add(f.name, p)
	}
	if o.NoCache {
		args = append(args, "-no-token-cache")
	}
	return args, nil
}
