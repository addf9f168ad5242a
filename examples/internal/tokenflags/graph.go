package tokenflags

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/graph"
	"github.com/clusterconnect/clusterconnect/tokens/signin"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// What to do with a token whose groups overflowed it (Entra ID's groups
// overage), -group-overage.
const (
	OverageRefuse        = "refuse"         // refuse it, saying why
	OverageGraph         = "graph"          // ask Microsoft Graph
	OverageWithoutGroups = "without-groups" // let it in with no groups
)

// GraphFlags are the flags for resolving groups overage through
// Microsoft Graph with the binary's own app-only credential.
type GraphFlags struct {
	mode, endpoint, resource, tenantID, clientID, authorityHost, ca, secretFile *string
}

// RegisterGraph adds the flags to fs; modes lists the -group-overage
// values the binary takes.
func RegisterGraph(fs *flag.FlagSet, modes ...string) *GraphFlags {
	return &GraphFlags{
		mode:          fs.String("group-overage", OverageRefuse, "a token whose groups overflowed it (Entra groups overage): "+strings.Join(modes, ", ")),
		endpoint:      fs.String("graph-endpoint", graph.DefaultEndpoint, "with -group-overage graph: Microsoft Graph's URL"),
		resource:      fs.String("graph-resource", "", "with -group-overage graph: the resource its token is for (default: -graph-endpoint, as in every Microsoft cloud)"),
		tenantID:      fs.String("graph-tenant-id", "", "with -group-overage graph: the tenant this binary's own app is in (default $AZURE_TENANT_ID)"),
		clientID:      fs.String("graph-client-id", "", "with -group-overage graph: this binary's own app, with GroupMember.Read.All (default $AZURE_CLIENT_ID); it signs in with workload identity ($AZURE_FEDERATED_TOKEN_FILE) or a secret"),
		authorityHost: fs.String("graph-authority-host", "", "with -group-overage graph: Entra sign-in host (default $AZURE_AUTHORITY_HOST, else "+signin.AzurePublicCloud+")"),
		ca:            fs.String("graph-ca", "", "with -group-overage graph: PEM CA file for the sign-in host and Graph (default: system roots)"),
		secretFile:    fs.String("graph-client-secret-file", "", "with -group-overage graph: file holding the app's client secret (default: $AZURE_CLIENT_SECRET, else workload identity)"),
	}
}

// Mode is -group-overage.
func (g *GraphFlags) Mode() string { return *g.mode }

// Resolver is the Graph resolver the flags describe, or nil unless
// -group-overage graph.
func (g *GraphFlags) Resolver() (tokens.GroupResolver, error) {
	switch *g.mode {
	case OverageRefuse, OverageWithoutGroups:
		return nil, nil
	case OverageGraph:
	default:
		return nil, fmt.Errorf("-group-overage %q: use %s, %s or %s", *g.mode, OverageRefuse, OverageGraph, OverageWithoutGroups)
	}
	orEnv := func(v, env string) string {
		if v != "" {
			return v
		}
		return os.Getenv(env)
	}
	resource := *g.resource
	if resource == "" {
		resource = *g.endpoint
	}
	cfg := signin.Config{
		AuthorityHost: orEnv(*g.authorityHost, "AZURE_AUTHORITY_HOST"), TenantID: orEnv(*g.tenantID, "AZURE_TENANT_ID"),
		ClientID: orEnv(*g.clientID, "AZURE_CLIENT_ID"), Scopes: []string{signin.ServerScope(resource)},
	}
	if cfg.TenantID == "" || cfg.ClientID == "" {
		return nil, errors.New("-group-overage graph needs -graph-tenant-id and -graph-client-id (or AZURE_TENANT_ID and AZURE_CLIENT_ID): the app this binary signs in to Graph as")
	}
	var client *http.Client
	if *g.ca != "" {
		var err error
		if client, err = cli.CAClient("graph-ca", *g.ca, signin.DefaultTimeout); err != nil {
			return nil, err
		}
		cfg.HTTPClient = client
	}
	var own source.Fetcher
	secret := os.Getenv("AZURE_CLIENT_SECRET")
	if *g.secretFile != "" {
		b, err := cli.ReadFileFlag("graph-client-secret-file", *g.secretFile)
		if err != nil {
			return nil, err
		}
		secret = strings.TrimSpace(string(b))
	}
	switch fedFile := os.Getenv("AZURE_FEDERATED_TOKEN_FILE"); {
	case secret != "":
		own = &signin.ClientSecret{Config: cfg, Secret: secret}
	case fedFile != "":
		own = &signin.Federated{Config: cfg, Assertion: signin.TokenFile(fedFile)}
	default:
		return nil, errors.New("-group-overage graph needs this binary's own credential: AZURE_FEDERATED_TOKEN_FILE (workload identity), AZURE_CLIENT_SECRET or -graph-client-secret-file")
	}
	return graph.New(&graph.Config{TokenSource: source.Cached(source.FromFetcher(own), 0), Endpoint: *g.endpoint, HTTPClient: client})
}
