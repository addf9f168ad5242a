package login

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/internal/tlsfile"
	"github.com/clusterconnect/clusterconnect/tokens/signin"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// Clouds maps Options.Cloud's names to their sign-in hosts, as the relay
// and the agent name their clouds.
var Clouds = map[string]string{"public": signin.AzurePublicCloud, "usgov": signin.AzureUSGovernmentCloud, "china": signin.AzureChinaCloud}

// Options say where the user's token comes from: exactly one of Token,
// TokenFile, TokenCommand or Mode. Their command-line form (AddFlags,
// PluginArgs) is kubelogin's: -login, -server-id, -tenant-id, …; errors
// name the flags.
type Options struct {
	// Token is a static token; TokenFile a file holding one, re-read
	// when it changes; TokenCommand a command printing one (plain, az
	// JSON or an ExecCredential), run when it is about to expire.
	Token, TokenFile, TokenCommand string
	// Mode signs in without another CLI (see Modes).
	Mode string
	// ServerID is the cluster's server app: its Application ID URI or
	// client ID (scope <server-id>/.default). Required with Mode.
	ServerID string
	// TenantID and ClientID name the directory and the app that signs in;
	// Complete takes them from AZURE_TENANT_ID and AZURE_CLIENT_ID.
	TenantID, ClientID string
	// ClientSecret or ClientCertificate (a PEM file with the certificate
	// and its key) for spn; FederatedTokenFile for workloadidentity.
	ClientSecret, ClientCertificate, FederatedTokenFile string
	// Cloud is a name in Clouds; AuthorityHost, if set, overrides it.
	// AuthorityCA is a PEM CA file for the sign-in host.
	Cloud, AuthorityHost, AuthorityCA string
	// CacheDir keeps signed-in tokens, 0600 (default
	// source.DefaultCacheDir); NoCache keeps none on disk.
	CacheDir string
	NoCache  bool
	// PoPHost binds each use of the token to this host (Arc: the
	// cluster's ARM ID), as kubelogin --pop-enabled --pop-claims u=… does.
	PoPHost string

	claims string // a claims challenge the sign-in is to meet (StepUp)
}

// Complete fills what was left empty from the variables Azure's SDKs and
// kubelogin read (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET,
// AZURE_CLIENT_CERTIFICATE_PATH, AZURE_FEDERATED_TOKEN_FILE,
// AZURE_AUTHORITY_HOST), and the Azure CLI's app for interactive and
// devicecode, when Mode is set. With no source but a ServerID, Mode is
// interactive.
func (o *Options) Complete() {
	o.Cloud = orDefault(o.Cloud, "public")
	if o.Mode == "" && o.Token == "" && o.TokenFile == "" && o.TokenCommand == "" && o.ServerID != "" {
		// A person at a desktop signs in in the browser (device code
		// where none can open), as az login does.
		o.Mode = "interactive"
	}
	if o.Mode == "" {
		return
	}
	for _, f := range []struct {
		p   *string
		env string
	}{
		{&o.TenantID, "AZURE_TENANT_ID"}, {&o.ClientID, "AZURE_CLIENT_ID"}, {&o.ClientSecret, "AZURE_CLIENT_SECRET"},
		{&o.ClientCertificate, "AZURE_CLIENT_CERTIFICATE_PATH"}, {&o.FederatedTokenFile, "AZURE_FEDERATED_TOKEN_FILE"},
		{&o.AuthorityHost, "AZURE_AUTHORITY_HOST"},
	} {
		if *f.p == "" {
			*f.p = os.Getenv(f.env)
		}
	}
	if m := lookup(o.Mode); m != nil && m.defaultClient != "" && o.ClientID == "" {
		o.ClientID = m.defaultClient
	}
}

// Validate says what is wrong with the options, in the flags' words,
// before anything runs. Call Complete first.
func (o *Options) Validate() error {
	n := 0
	for _, v := range []string{o.Token, o.TokenFile, o.TokenCommand, o.Mode} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of -login, -token, -token-file or -token-command")
	}
	if o.Mode == "" {
		return nil
	}
	m := lookup(o.Mode)
	switch {
	case m == nil:
		return fmt.Errorf("-login %q: use one of %s", o.Mode, strings.Join(Modes(), ", "))
	case o.ServerID == "":
		return errors.New("-login needs -server-id, the cluster's server app (its application ID URI, e.g. api://clusterconnect-server, or client ID)")
	case Clouds[o.Cloud] == "":
		return fmt.Errorf("-cloud %q: use public, usgov or china", o.Cloud)
	case o.PoPHost != "" && !m.pop:
		return fmt.Errorf("-pop-host needs -login %s: the sign-in must bind the token to a key", strings.Join(popModes(), ", "))
	case m.ownApp && o.TenantID == "":
		return fmt.Errorf("-login %s needs -tenant-id (or AZURE_TENANT_ID)", o.Mode)
	case m.ownApp && o.ClientID == "":
		return fmt.Errorf("-login %s needs -client-id (or AZURE_CLIENT_ID)", o.Mode)
	case m.check != nil:
		return m.check(o)
	}
	return nil
}

// TokenSource is the source the options describe; signed-in and command
// tokens go through the disk cache unless NoCache. For a person's sign-in
// (interactive, devicecode) without PoPHost it is a StepUpper. It
// completes and validates o first.
func (o *Options) TokenSource() (oauth2.TokenSource, error) {
	o.Complete()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	switch {
	case o.Token != "":
		return source.Static(o.Token), nil
	case o.TokenFile != "":
		return source.File(o.TokenFile), nil
	case o.TokenCommand != "":
		return o.cached("command|"+o.TokenCommand, source.FromTokenSource(&source.Command{Command: strings.Fields(o.TokenCommand)}))
	}
	if o.Mode == "azurecli" {
		cmd := []string{"az", "account", "get-access-token", "--resource", o.ServerID, "-o", "json"}
		if o.TenantID != "" {
			cmd = append(cmd, "--tenant", o.TenantID)
		}
		return o.azureCLISource(cmd), nil
	}
	var pop *signin.PoPKey
	if o.PoPHost != "" {
		var err error
		if pop, err = o.popKey(); err != nil {
			return nil, err
		}
	}
	cfg, err := o.signinConfig(pop)
	if err != nil {
		return nil, err
	}
	key, f, err := lookup(o.Mode).fetcher(o, cfg)
	if err != nil {
		return nil, err
	}
	src, err := o.cached(key, f)
	switch {
	case err != nil:
		return nil, err
	case pop != nil:
		return signin.PoPSource(src, pop, o.PoPHost), nil
	case lookup(o.Mode).person:
		return o.withStepUp(src, cfg), nil
	}
	return src, nil
}

// popKey is the proof-of-possession key of this sign-in's cache entry
// (per authority, app and scope), made the first time.
func (o *Options) popKey() (*signin.PoPKey, error) {
	dir, err := o.cacheDirectory()
	if err != nil {
		return nil, err
	}
	cfg, err := o.signinConfig(nil)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(cfg.CacheKey()))
	return signin.LoadOrCreatePoPKey(filepath.Join(dir, "pop-"+hex.EncodeToString(sum[:8])+".key"))
}

func (o *Options) cached(key string, f source.Fetcher) (oauth2.TokenSource, error) {
	if o.NoCache {
		return source.Cached(source.FromFetcher(f), 0), nil
	}
	dir, err := o.cacheDirectory()
	if err != nil {
		return nil, err
	}
	cache := &source.DiskCache{Dir: dir}
	return source.Cached(cache.TokenSource(key, f), 0), nil
}

func (o *Options) cacheDirectory() (string, error) {
	if o.CacheDir != "" {
		return filepath.Abs(o.CacheDir)
	}
	return source.DefaultCacheDir()
}

// signinConfig names the app that signs in and where; with pop, its
// tokens are bound to that key.
func (o *Options) signinConfig(pop *signin.PoPKey) (signin.Config, error) {
	cfg := signin.Config{
		AuthorityHost: orDefault(o.AuthorityHost, Clouds[o.Cloud]), TenantID: o.TenantID, ClientID: o.ClientID,
		Scopes: []string{signin.ServerScope(o.ServerID)}, PoPKey: pop,
	}
	if o.AuthorityCA != "" {
		roots, _, err := tlsfile.Pool(o.AuthorityCA)
		if err != nil {
			return cfg, fmt.Errorf("-authority-ca: %w", err)
		}
		cfg.HTTPClient = tlsfile.Client(roots, signin.DefaultTimeout)
	}
	return cfg, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Modes are the sign-in modes, as kubelogin names them.
func Modes() []string {
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = m.name
	}
	return names
}

func popModes() []string {
	var names []string
	for _, m := range modes {
		if m.pop {
			names = append(names, m.name)
		}
	}
	return names
}

func lookup(name string) *mode {
	i := slices.IndexFunc(modes, func(m mode) bool { return m.name == name })
	if i < 0 {
		return nil
	}
	return &modes[i]
}
