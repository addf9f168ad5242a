package login_test

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens/login"
)

const (
	tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	server = "api://clusterconnect-server"
	ciApp  = "5f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"
)

// clearAzure empties the variables Complete reads, so that the machine's
// own do not decide a test.
func clearAzure(t *testing.T) {
	for _, v := range []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
		"AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "ACTIONS_ID_TOKEN_REQUEST_URL"} {
		t.Setenv(v, "")
	}
}

// Options that cannot work are refused before anything runs, naming the
// flag to fix.
func TestValidate(t *testing.T) {
	clearAzure(t)
	for _, tt := range []struct {
		name string
		o    login.Options
		want string // "" for valid
	}{
		{"nothing", login.Options{}, "exactly one of -login, -token, -token-file or -token-command"},
		{"two sources", login.Options{Mode: "azurecli", ServerID: server, TokenFile: "x"}, "exactly one"},
		{"a token file", login.Options{TokenFile: "x"}, ""},
		{"an unknown mode", login.Options{Mode: "magic", ServerID: server}, "interactive, devicecode, spn, workloadidentity, msi, azurecli"},
		{"no server", login.Options{Mode: "spn", TenantID: tenant, ClientID: ciApp, ClientSecret: "s"}, "-server-id"},
		{"an unknown cloud", login.Options{Mode: "devicecode", ServerID: server, TenantID: tenant, Cloud: "mars"}, "public, usgov or china"},
		{"devicecode without a tenant", login.Options{Mode: "devicecode", ServerID: server}, "-tenant-id"},
		{"devicecode as the Azure CLI", login.Options{Mode: "devicecode", ServerID: server, TenantID: tenant}, ""},
		{"spn without a credential", login.Options{Mode: "spn", ServerID: server, TenantID: tenant, ClientID: ciApp}, "-client-secret"},
		{"spn with two credentials", login.Options{Mode: "spn", ServerID: server, TenantID: tenant, ClientID: ciApp, ClientSecret: "s", ClientCertificate: "c"}, "-client-secret"},
		{"spn without an app", login.Options{Mode: "spn", ServerID: server, TenantID: tenant, ClientSecret: "s"}, "-client-id"},
		{"workload identity without a token", login.Options{Mode: "workloadidentity", ServerID: server, TenantID: tenant, ClientID: ciApp}, "id-token: write"},
		{"azurecli needs no app", login.Options{Mode: "azurecli", ServerID: server}, ""},
		{"azurecli cannot bind a key", login.Options{Mode: "azurecli", ServerID: server, PoPHost: "h"}, "-pop-host needs -login interactive, devicecode, spn, workloadidentity"},
		{"msi needs no tenant or app", login.Options{Mode: "msi", ServerID: server}, ""},
		{"nothing but a server: a person signs in", login.Options{ServerID: server, TenantID: tenant}, ""},
		{"the person needs a tenant", login.Options{ServerID: server}, "-login interactive needs -tenant-id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.Complete()
			err := o.Validate()
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// What the environment says counts as a flag would, for sign-in modes.
func TestCompleteReadsAzureVariables(t *testing.T) {
	clearAzure(t)
	t.Setenv("AZURE_TENANT_ID", tenant)
	t.Setenv("AZURE_CLIENT_ID", ciApp)
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token")
	o := login.Options{Mode: "workloadidentity", ServerID: server}
	o.Complete()
	require.NoError(t, o.Validate())
	assert.Equal(t, tenant, o.TenantID)
	assert.Equal(t, ciApp, o.ClientID)
	assert.Equal(t, "/var/run/secrets/azure/tokens/azure-identity-token", o.FederatedTokenFile)

	plain := login.Options{TokenFile: "t"}
	plain.Complete()
	assert.Empty(t, plain.TenantID, "a token file reads no sign-in variables")
}

// The plugin's arguments, read back by the plugin's flags, are the same
// options, files by absolute path, and never the client secret.
func TestPluginArgsRoundTrip(t *testing.T) {
	clearAzure(t)
	o := login.Options{Mode: "spn", ServerID: server, TenantID: tenant, ClientID: ciApp, ClientSecret: "s3cret",
		Cloud: "usgov", AuthorityCA: "ca.pem", CacheDir: "cache", PoPHost: "arm-id", NoCache: true}
	o.Complete()
	require.NoError(t, o.Validate())
	args, err := o.PluginArgs()
	require.NoError(t, err)
	assert.NotContains(t, args, "s3cret")

	var back login.Options
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	back.AddFlags(fs)
	require.NoError(t, fs.Parse(args))
	want := o
	want.ClientSecret = ""
	want.AuthorityCA, _ = filepath.Abs("ca.pem")
	want.CacheDir, _ = filepath.Abs("cache")
	assert.Equal(t, want, back)

	o.Cloud = "public"
	args, err = o.PluginArgs()
	require.NoError(t, err)
	assert.NotContains(t, args, "-cloud", "the plugin's default is left out")
}
