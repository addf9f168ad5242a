package login_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/login"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// A person's source meets a claims challenge by signing them in again;
// the stronger token is kept on disk, so the next process (kubectl's
// next run of the plugin) has it too. Sources without a person cannot.
func TestStepUp(t *testing.T) {
	clearAzure(t)
	is, err := oidctest.Start()
	require.NoError(t, err)
	defer is.Close()
	is.AddApp(oidctest.App{ClientID: "04b07795-8ddb-461a-bbee-02f9e1bf7b46", Tenant: tenant, Public: true})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(ca, is.CA.CertPEM(), 0o600))
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenant}, Audiences: []string{server}, DiscoveryURL: is.EntraDiscoveryURL})
	require.NoError(t, err)
	v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: is.Client()})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		for {
			l, err := is.NextDeviceLogin(ctx)
			if err != nil {
				return
			}
			is.ApproveDevice(l.UserCode, oidctest.EntraClaims{OID: "alice-oid"})
		}
	}()
	o := login.Options{Mode: "devicecode", ServerID: server, TenantID: tenant, AuthorityHost: is.AuthorityHost(), AuthorityCA: ca, CacheDir: t.TempDir()}
	src, err := o.TokenSource()
	require.NoError(t, err)
	plain, err := src.Token()
	require.NoError(t, err)
	verified, err := v.Verify(ctx, plain.AccessToken)
	require.NoError(t, err)
	assert.False(t, verified.HasAuthContext("c1"))

	su, ok := src.(login.StepUpper)
	require.True(t, ok, "a person's source steps up")
	stepped, err := su.StepUp(ctx, access.ClaimsChallenge("c1"))
	require.NoError(t, err)
	verified, err = v.Verify(ctx, stepped.AccessToken)
	require.NoError(t, err)
	assert.True(t, verified.HasAuthContext("c1"))
	again, err := src.Token()
	require.NoError(t, err)
	assert.Equal(t, stepped.AccessToken, again.AccessToken, "this process goes on with the stronger token")

	next, err := o.TokenSource() // kubectl's next run of the plugin
	require.NoError(t, err)
	tok, err := next.Token()
	require.NoError(t, err)
	assert.Equal(t, stepped.AccessToken, tok.AccessToken, "the next process has it from the disk cache")
	assert.Equal(t, 2, is.TokenRequests("device_code"), "one sign-in, then one to step up")

	spn := login.Options{Mode: "spn", ServerID: server, TenantID: tenant, ClientID: ciApp, ClientSecret: "s", AuthorityHost: is.AuthorityHost(), CacheDir: t.TempDir()}
	src, err = spn.TokenSource()
	require.NoError(t, err)
	_, ok = src.(login.StepUpper)
	assert.False(t, ok, "a service principal has nobody to sign in again")
	assert.ErrorIs(t, spn.StepUpError(), login.ErrNoStepUp)
	assert.ErrorContains(t, spn.StepUpError(), "the token of -login spn cannot give: sign in as a person (-login interactive or devicecode)")
}
