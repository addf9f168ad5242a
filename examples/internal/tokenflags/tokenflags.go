// Package tokenflags holds the command-line flags that say which tokens a
// binary accepts, shared by the relay and the agent so both verify the same
// way. It is apart from package cli so that the client proxy, which
// verifies nothing, does not link the verifier.
package tokenflags

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
	"github.com/clusterconnect/clusterconnect/tokens"
)

// Flags are the issuer flags: Entra ID by tenant, or one OIDC issuer.
type Flags struct {
	tenants, audiences, cloud, entraDiscovery, issuer, issuerCA *string
	popHosts                                                    *string
	popRequired                                                 *bool
}

// Register adds the flags to fs.
func Register(fs *flag.FlagSet) *Flags {
	return &Flags{
		tenants:        fs.String("tenant", "", "comma-separated Entra ID tenant IDs allowed"),
		audiences:      fs.String("audience", "", "comma-separated audiences (server app client ID, Application ID URI)"),
		cloud:          fs.String("cloud", "public", "Entra ID cloud: public, usgov or china"),
		entraDiscovery: fs.String("entra-discovery-base", "", "fetch Entra discovery documents from this base URL instead (mirrors, tests)"),
		issuer:         fs.String("issuer", "", "a generic OIDC issuer URL, instead of Entra ID"),
		issuerCA:       fs.String("issuer-ca", "", "PEM CA file for the token issuer's HTTPS (default: system roots)"),
		popHosts:       fs.String("pop-host", "", "accept proof-of-possession tokens whose u claim is one of these (comma-separated; Arc: the cluster's ARM ID), as kubelogin --pop-enabled --pop-claims u=… makes them"),
		popRequired:    fs.Bool("pop-required", false, "with -pop-host: refuse plain bearer tokens"),
	}
}

// Set reports whether any issuer was given.
func (f *Flags) Set() bool { return *f.tenants != "" || *f.issuer != "" }

// Generic reports whether the issuer is a generic OIDC one.
func (f *Flags) Generic() bool { return *f.issuer != "" }

// Verifier builds the verifier the flags describe, its metrics registered
// with reg (nil: none).
func (f *Flags) Verifier(log *slog.Logger, reg prometheus.Registerer) (*tokens.Verifier, error) {
	auds := Split(*f.audiences)
	if len(auds) == 0 {
		return nil, errors.New("-audience is required: the token audience the cluster accepts")
	}
	var issuers []tokens.Issuer
	switch {
	case *f.issuer != "":
		issuers = []tokens.Issuer{{URL: *f.issuer, Audiences: auds}}
	case *f.tenants != "":
		clouds := map[string]tokens.Cloud{"public": tokens.AzurePublic, "usgov": tokens.AzureUSGovernment, "china": tokens.AzureChina}
		c, ok := clouds[*f.cloud]
		if !ok {
			return nil, fmt.Errorf("-cloud %q: use public, usgov or china", *f.cloud)
		}
		ec := tokens.EntraConfig{TenantIDs: Split(*f.tenants), Audiences: auds, Cloud: c}
		if *f.entraDiscovery != "" {
			base := strings.TrimSuffix(*f.entraDiscovery, "/")
			ec.DiscoveryURL = func(tid string, version int) string {
				if version == 1 {
					return base + "/" + tid + "/.well-known/openid-configuration"
				}
				return base + "/" + tid + "/v2.0/.well-known/openid-configuration"
			}
		}
		var err error
		if issuers, err = tokens.EntraIssuers(ec); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("give -tenant (Entra ID) or -issuer (other OIDC)")
	}
	cfg := &tokens.Config{Issuers: issuers, Logger: log, Registerer: reg}
	if hosts := Split(*f.popHosts); len(hosts) > 0 {
		cfg.PoP = &tokens.PoPConfig{Hosts: hosts, Required: *f.popRequired}
	} else if *f.popRequired {
		return nil, errors.New("-pop-required needs -pop-host: the u claim PoP tokens must name")
	}
	if *f.issuerCA != "" {
		var err error
		if cfg.HTTPClient, err = cli.CAClient("issuer-ca", *f.issuerCA, 30*time.Second); err != nil {
			return nil, err
		}
	}
	return tokens.NewVerifier(cfg)
}

// Split splits a comma-separated list, dropping empty items.
func Split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
