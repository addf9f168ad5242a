package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/internal/cli"
	"github.com/clusterconnect/clusterconnect/tokens/signin"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// The login modes, named as kubelogin names them.
const (
	loginDeviceCode       = "devicecode"
	loginServicePrincipal = "spn"
	loginWorkloadIdentity = "workloadidentity"
	loginAzureCLI         = "azurecli"
)

// clouds are -cloud's names for the sign-in hosts, as the relay and agent
// name their clouds.
var clouds = map[string]string{"public": signin.AzurePublicCloud, "usgov": signin.AzureUSGovernmentCloud, "china": signin.AzureChinaCloud}

var loginModes = []string{loginDeviceCode, loginServicePrincipal, loginWorkloadIdentity, loginAzureCLI}

// azureCLIClientID is the Azure CLI's public client, which kubelogin also
// signs people in as: the server app must trust it (pre-authorize it), as
// AKS's server app does.
const azureCLIClientID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"

// tokenSettings are the flags that say where the user's token comes from.
type tokenSettings struct {
	token, tokenFile, tokenCmd *string

	login, serverID, tenantID, clientID    *string
	clientSecret, clientCert, federatedTok *string
	authorityHost, authorityCA, cloud      *string
	cacheDir                               *string
	noCache                                *bool
	popHost                                *string
}

func addTokenFlags(fs *flag.FlagSet) *tokenSettings {
	return &tokenSettings{
		token:     fs.String("token", "", "a static token"),
		tokenFile: fs.String("token-file", "", "file holding the token"),
		tokenCmd:  fs.String("token-command", "", "command printing the token (plain, az JSON, or ExecCredential)"),

		login:         fs.String("login", "", "sign in without another CLI: "+strings.Join(loginModes, ", ")),
		serverID:      fs.String("server-id", "", "the cluster's server app: its application ID URI or client ID (scope <server-id>/.default)"),
		tenantID:      fs.String("tenant-id", "", "Entra tenant ID (default $AZURE_TENANT_ID)"),
		clientID:      fs.String("client-id", "", "app that signs in (default $AZURE_CLIENT_ID; for devicecode the Azure CLI's app)"),
		clientSecret:  fs.String("client-secret", "", "spn: the client secret (default $AZURE_CLIENT_SECRET; never written to a kubeconfig)"),
		clientCert:    fs.String("client-certificate", "", "spn: PEM file with the certificate and its key (default $AZURE_CLIENT_CERTIFICATE_PATH)"),
		federatedTok:  fs.String("federated-token-file", "", "workloadidentity: federated token file (default $AZURE_FEDERATED_TOKEN_FILE, else GitHub Actions' OIDC token)"),
		cloud:         fs.String("cloud", "public", "Entra ID cloud to sign in to: public, usgov or china"),
		authorityHost: fs.String("authority-host", "", "Entra sign-in host, overriding -cloud (default $AZURE_AUTHORITY_HOST)"),
		authorityCA:   fs.String("authority-ca", "", "PEM CA file for the sign-in host (default: system roots)"),
		cacheDir:      fs.String("token-cache-dir", "", "where signed-in tokens are kept, 0600 (default: the user cache dir's clusterconnect/tokens)"),
		noCache:       fs.Bool("no-token-cache", false, "keep no token on disk: every process signs in or runs -token-command again"),
		popHost:       fs.String("pop-host", "", "proof of possession: sign each use of the token for this host (Arc: the cluster's ARM ID), as kubelogin --pop-enabled --pop-claims u=… does"),
	}
}

// fromEnv fills a flag left empty from the variable Azure's SDKs and
// kubelogin read.
func fromEnv(p *string, name string) {
	if *p == "" {
		*p = os.Getenv(name)
	}
}

func (s *tokenSettings) defaults() {
	fromEnv(s.tenantID, "AZURE_TENANT_ID")
	fromEnv(s.clientID, "AZURE_CLIENT_ID")
	fromEnv(s.clientSecret, "AZURE_CLIENT_SECRET")
	fromEnv(s.clientCert, "AZURE_CLIENT_CERTIFICATE_PATH")
	fromEnv(s.federatedTok, "AZURE_FEDERATED_TOKEN_FILE")
	fromEnv(s.authorityHost, "AZURE_AUTHORITY_HOST")
	if *s.login == loginDeviceCode && *s.clientID == "" {
		*s.clientID = azureCLIClientID
	}
}

// check says what is wrong with the token flags, before anything runs.
func (s *tokenSettings) check() error {
	n := 0
	for _, v := range []string{*s.token, *s.tokenFile, *s.tokenCmd, *s.login} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of -login, -token, -token-file or -token-command")
	}
	if *s.login == "" {
		return nil
	}
	s.defaults()
	if !slices.Contains(loginModes, *s.login) {
		return fmt.Errorf("-login %q: use one of %s", *s.login, strings.Join(loginModes, ", "))
	}
	if *s.serverID == "" {
		return errors.New("-login needs -server-id, the cluster's server app (its application ID URI, e.g. api://clusterconnect-server, or client ID)")
	}
	if _, ok := clouds[*s.cloud]; !ok {
		return fmt.Errorf("-cloud %q: use public, usgov or china", *s.cloud)
	}
	if *s.popHost != "" && (*s.login == "" || *s.login == loginAzureCLI) {
		return errors.New("-pop-host needs -login devicecode, spn or workloadidentity: the sign-in must bind the token to a key")
	}
	if *s.login == loginAzureCLI {
		return nil
	}
	if *s.tenantID == "" {
		return fmt.Errorf("-login %s needs -tenant-id (or AZURE_TENANT_ID)", *s.login)
	}
	if *s.clientID == "" {
		return fmt.Errorf("-login %s needs -client-id (or AZURE_CLIENT_ID)", *s.login)
	}
	if *s.login == loginServicePrincipal && (*s.clientSecret == "") == (*s.clientCert == "") {
		return errors.New("-login spn needs one of -client-secret (or AZURE_CLIENT_SECRET) and -client-certificate")
	}
	if *s.login == loginWorkloadIdentity && *s.federatedTok == "" && os.Getenv("ACTIONS_ID_TOKEN_REQUEST_URL") == "" {
		return errors.New("-login workloadidentity needs -federated-token-file (or AZURE_FEDERATED_TOKEN_FILE), " +
			"or a GitHub Actions job with \"permissions: id-token: write\"")
	}
	return nil
}

// source is the token source the flags describe; signed-in and command
// tokens go through the disk cache unless -no-token-cache.
func (s *tokenSettings) source() (oauth2.TokenSource, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	switch {
	case *s.token != "":
		return source.Static(*s.token), nil
	case *s.tokenFile != "":
		return source.File(*s.tokenFile), nil
	case *s.tokenCmd != "":
		return s.cached("command|"+*s.tokenCmd, source.FromTokenSource(&source.Command{Command: strings.Fields(*s.tokenCmd)}))
	}
	var pop *signin.PoPKey
	if *s.popHost != "" {
		dir, err := s.cacheDirectory()
		if err != nil {
			return nil, err
		}
		// A key per cache entry: per authority, app and scope.
		cfg := s.signinConfig()
		sum := sha256.Sum256([]byte(cfg.CacheKey()))
		if pop, err = signin.LoadOrCreatePoPKey(filepath.Join(dir, "pop-"+hex.EncodeToString(sum[:8])+".key")); err != nil {
			return nil, err
		}
	}
	key, f, err := s.fetcher(pop)
	if err != nil {
		return nil, err
	}
	src, err := s.cached(key, f)
	if err != nil || pop == nil {
		return src, err
	}
	return signin.PoPSource(src, pop, *s.popHost), nil
}

func (s *tokenSettings) cached(key string, f source.Fetcher) (oauth2.TokenSource, error) {
	if *s.noCache {
		return source.Cached(source.FromFetcher(f), 0), nil
	}
	dir, err := s.cacheDirectory()
	if err != nil {
		return nil, err
	}
	cache := &source.DiskCache{Dir: dir}
	return source.Cached(cache.TokenSource(key, f), 0), nil
}

func (s *tokenSettings) cacheDirectory() (string, error) {
	if *s.cacheDir != "" {
		return filepath.Abs(*s.cacheDir)
	}
	return source.DefaultCacheDir()
}

// signinConfig names the app that signs in and where.
func (s *tokenSettings) signinConfig() signin.Config {
	host := *s.authorityHost
	if host == "" {
		host = clouds[*s.cloud]
	}
	return signin.Config{
		AuthorityHost: host, TenantID: *s.tenantID, ClientID: *s.clientID,
		Scopes: []string{signin.ServerScope(*s.serverID)},
	}
}

// fetcher is the sign-in flow of -login, with its cache key; with pop,
// its tokens are bound to that key.
func (s *tokenSettings) fetcher(pop *signin.PoPKey) (string, source.Fetcher, error) {
	cfg := s.signinConfig()
	cfg.PoPKey = pop
	if *s.authorityCA != "" {
		var err error
		if cfg.HTTPClient, err = cli.CAClient("authority-ca", *s.authorityCA, signin.DefaultTimeout); err != nil {
			return "", nil, err
		}
	}
	switch *s.login {
	case loginDeviceCode:
		return cfg.CacheKey(), &signin.DeviceCode{Config: cfg}, nil
	case loginServicePrincipal:
		if *s.clientSecret != "" {
			return cfg.CacheKey(), &signin.ClientSecret{Config: cfg, Secret: *s.clientSecret}, nil
		}
		cert, key, err := signin.LoadCertificate(*s.clientCert)
		if err != nil {
			return "", nil, err
		}
		return cfg.CacheKey(), &signin.ClientCertificate{Config: cfg, Certificate: cert, Key: key}, nil
	case loginWorkloadIdentity:
		assertion := signin.GitHubActions(os.Getenv("ACTIONS_ID_TOKEN_REQUEST_URL"), os.Getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN"), "", nil)
		if *s.federatedTok != "" {
			assertion = signin.TokenFile(*s.federatedTok)
		}
		return cfg.CacheKey(), &signin.Federated{Config: cfg, Assertion: assertion}, nil
	}
	// azurecli: az signs in and keeps its own tokens; ours saves running
	// it for every kubectl call.
	cmd := []string{"az", "account", "get-access-token", "--resource", *s.serverID, "-o", "json"}
	if *s.tenantID != "" {
		cmd = append(cmd, "--tenant", *s.tenantID)
	}
	return "azurecli|" + strings.Join(cmd, " "), source.FromTokenSource(&source.Command{Command: cmd}), nil
}

// pluginArgs are the token flags as `proxy token` is to get them from a
// kubeconfig: files by absolute path (kubectl runs the plugin from
// anywhere), and no secret, which the plugin reads from its environment.
func (s *tokenSettings) pluginArgs() ([]string, error) {
	args := []string{"token"}
	add := func(name, value string) { args = append(args, "-"+name, value) }
	abs := func(name, value string) error {
		if value == "" {
			return nil
		}
		p, err := filepath.Abs(value)
		if err == nil {
			add(name, p)
		}
		return err
	}
	if *s.token != "" {
		add("token", *s.token)
	}
	if *s.tokenCmd != "" {
		add("token-command", *s.tokenCmd)
	}
	for _, f := range []struct{ name, value string }{{"login", *s.login}, {"cloud", cloudArg(*s.cloud)}, {"pop-host", *s.popHost}, {"server-id", *s.serverID}, {"tenant-id", *s.tenantID}, {"client-id", *s.clientID}, {"authority-host", *s.authorityHost}} {
		if f.value != "" {
			add(f.name, f.value)
		}
	}
	for _, f := range []struct{ name, value string }{{"token-file", *s.tokenFile}, {"authority-ca", *s.authorityCA}, {"client-certificate", *s.clientCert}, {"federated-token-file", *s.federatedTok}, {"token-cache-dir", *s.cacheDir}} {
		if err := abs(f.name, f.value); err != nil {
			return nil, err
		}
	}
	if *s.noCache {
		args = append(args, "-no-token-cache")
	}
	return args, nil
}

// cloudArg is -cloud as the plugin needs it: nothing for the default.
func cloudArg(c string) string {
	if c == "public" {
		return ""
	}
	return c
}
