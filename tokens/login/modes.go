package login

import (
	"errors"
	"os"

	"github.com/clusterconnect/clusterconnect/tokens/signin"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// azureCLIClientID is the Azure CLI's public client, which kubelogin also
// signs people in as: the server app must trust it (pre-authorize it), as
// AKS's server app does.
const azureCLIClientID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"

// A mode is one way to sign in: everything that differs between them is
// here, so a new flow is one more entry.
type mode struct {
	name string
	// ownApp: the mode signs in as an app of its own, named by
	// -tenant-id and -client-id; defaultClient, if set, is that app when
	// no -client-id is given.
	ownApp        bool
	defaultClient string
	// pop: the flow can bind its tokens to a key (-pop-host).
	pop bool
	// person: a person signs in, who can meet a claims challenge
	// (Options.claims, which the fetcher passes on).
	person bool
	// check says what else the mode needs, before anything runs.
	check func(*Options) error
	// fetcher is the flow, with its cache key.
	fetcher func(*Options, signin.Config) (key string, f source.Fetcher, err error)
}

var modes = []mode{
	// interactive: the browser on this machine, as az login does; device
	// code where no browser can open (SSH, containers, CI runners).
	{name: "interactive", ownApp: true, defaultClient: azureCLIClientID, pop: true, person: true,
		fetcher: func(o *Options, cfg signin.Config) (string, source.Fetcher, error) {
			if !signin.HasBrowser() {
				return cfg.CacheKey(), &signin.DeviceCode{Config: cfg, Claims: o.claims}, nil
			}
			return cfg.CacheKey(), &signin.Browser{Config: cfg, Claims: o.claims}, nil
		}},
	{name: "devicecode", ownApp: true, defaultClient: azureCLIClientID, pop: true, person: true,
		fetcher: func(o *Options, cfg signin.Config) (string, source.Fetcher, error) {
			return cfg.CacheKey(), &signin.DeviceCode{Config: cfg, Claims: o.claims}, nil
		}},
	{name: "spn", ownApp: true, pop: true,
		check: func(o *Options) error {
			if (o.ClientSecret == "") == (o.ClientCertificate == "") {
				return errors.New("-login spn needs one of -client-secret (or AZURE_CLIENT_SECRET) and -client-certificate")
			}
			return nil
		},
		fetcher: func(o *Options, cfg signin.Config) (string, source.Fetcher, error) {
			if o.ClientSecret != "" {
				return cfg.CacheKey(), &signin.ClientSecret{Config: cfg, Secret: o.ClientSecret}, nil
			}
			cert, key, err := signin.LoadCertificate(o.ClientCertificate)
			if err != nil {
				return "", nil, err
			}
			return cfg.CacheKey(), &signin.ClientCertificate{Config: cfg, Certificate: cert, Key: key}, nil
		}},
	{name: "workloadidentity", ownApp: true, pop: true,
		check: func(o *Options) error {
			if o.FederatedTokenFile == "" && os.Getenv("ACTIONS_ID_TOKEN_REQUEST_URL") == "" {
				return errors.New("-login workloadidentity needs -federated-token-file (or AZURE_FEDERATED_TOKEN_FILE), " +
					"or a GitHub Actions job with \"permissions: id-token: write\"")
			}
			return nil
		},
		fetcher: func(o *Options, cfg signin.Config) (string, source.Fetcher, error) {
			assertion := signin.GitHubActions(os.Getenv("ACTIONS_ID_TOKEN_REQUEST_URL"), os.Getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN"), "", nil)
			if o.FederatedTokenFile != "" {
				assertion = signin.TokenFile(o.FederatedTokenFile)
			}
			return cfg.CacheKey(), &signin.Federated{Config: cfg, Assertion: assertion}, nil
		}},
	// msi: the Azure machine's managed identity (-client-id picks a
	// user-assigned one), from IMDS or App Service's endpoint.
	{name: "msi",
		fetcher: func(o *Options, cfg signin.Config) (string, source.Fetcher, error) {
			m := signin.ManagedIdentityFromEnv(o.ServerID, o.ClientID)
			m.HTTPClient = cfg.HTTPClient // -authority-ca; else IMDS directly
			return m.CacheKey(), m, nil
		}},
	// azurecli: az signs in and keeps its own tokens; ours, kept only
	// under az's active account (see azureCLI), save running it for every
	// kubectl call.
	{name: "azurecli"},
}
