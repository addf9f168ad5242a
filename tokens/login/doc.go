// Package login turns what a user says about their token — a sign-in
// mode as kubelogin names them, or a static token, a file or a command —
// into an oauth2.TokenSource, cached on disk across processes, and into
// the arguments of the exec credential plugin that gets the same token
// for kubectl.
//
//	o := &login.Options{Mode: "devicecode", ServerID: "api://clusterconnect-server", TenantID: tenantID}
//	src, err := o.TokenSource() // completes from AZURE_* and validates first
//
// CheckToken says, before a token is sent, what the relay would refuse
// in it that the client can see (expired, another tenant), and what to do.
//
// # Modes
//
//   - interactive (the default with a ServerID and no other source): a
//     person signs in in this machine's browser (signin.Browser), or
//     with a device code where no browser can open;
//   - devicecode: a person signs in on any browser with a code (signin.DeviceCode),
//     as the Azure CLI's app unless ClientID names another;
//   - spn: a service principal with a client secret or certificate;
//   - workloadidentity: a federated token from a file
//     (AZURE_FEDERATED_TOKEN_FILE) or a GitHub Actions job's OIDC token;
//   - msi: the Azure machine's managed identity (signin.ManagedIdentity),
//     user-assigned when ClientID names one;
//   - azurecli: az account get-access-token, its tokens kept only under
//     az's active account (the default subscription's user and tenant),
//     so that az account set and az logout take effect at once.
//
// Each mode is one entry in this package's table: what it needs, whether
// it can bind tokens to a key (proof of possession, PoPHost), and its
// flow. Options.AddFlags registers the options under the flag names that
// Options.PluginArgs writes, so a binary's flags and the plugin's
// arguments cannot drift apart.
package login
