package login_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens/login"
)

// fakeAz is an az on PATH that answers get-access-token with the token in
// its config dir's current-token file (or, with none, az's words for a
// logged-out user), and counts its calls; the test writes az's profile as
// az login, az account set and az logout would.
type fakeAz struct {
	t   *testing.T
	dir string // AZURE_CONFIG_DIR
}

func newFakeAz(t *testing.T) *fakeAz {
	bin := t.TempDir()
	script := `#!/bin/sh
echo "$@" >> "$AZURE_CONFIG_DIR/calls"
if [ ! -s "$AZURE_CONFIG_DIR/current-token" ]; then
  echo "ERROR: Please run 'az login' to setup account." >&2
  exit 1
fi
printf '{"accessToken": "%s", "expires_on": %s, "tokenType": "Bearer"}\n' "$(cat "$AZURE_CONFIG_DIR/current-token")" "` + fmt.Sprint(time.Now().Add(time.Hour).Unix()) + `"
`
	require.NoError(t, os.WriteFile(filepath.Join(bin, "az"), []byte(script), 0o755))
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	a := &fakeAz{t: t, dir: t.TempDir()}
	t.Setenv("AZURE_CONFIG_DIR", a.dir)
	return a
}

// account makes az's default subscription one of user in tenant, whose
// tokens az hands out from then on; user "" logs out.
func (a *fakeAz) account(user, tenant string) {
	profile := `{"installationId": "i", "subscriptions": []}`
	token := ""
	if user != "" {
		profile = fmt.Sprintf(`{"installationId": "i", "subscriptions": [
  {"id": "sub-other", "name": "other", "isDefault": false, "tenantId": "t-other", "environmentName": "AzureCloud", "user": {"name": "%[1]s", "type": "user"}},
  {"id": "sub-%[2]s", "name": "s", "isDefault": true, "tenantId": "%[2]s", "environmentName": "AzureCloud", "user": {"name": "%[1]s", "type": "user"}}]}`, user, tenant)
		token = "token-of-" + user + "-in-" + tenant
	}
	// az writes its profile with a byte order mark.
	require.NoError(a.t, os.WriteFile(filepath.Join(a.dir, "azureProfile.json"), []byte("\ufeff"+profile), 0o600))
	require.NoError(a.t, os.WriteFile(filepath.Join(a.dir, "current-token"), []byte(token), 0o600))
}

func (a *fakeAz) calls() int {
	b, _ := os.ReadFile(filepath.Join(a.dir, "calls"))
	return strings.Count(string(b), "\n")
}

// With -login azurecli, az is the source of truth: a token is reused only
// for the account az has active, so az account set to another tenant
// takes effect on the next call — of a client proxy that keeps running,
// and of a new process sharing the disk cache — and after az logout az
// itself is asked, and its words reach the user.
func TestAzureCLITokensFollowAzsAccount(t *testing.T) {
	clearAzure(t)
	az := newFakeAz(t)
	cache := t.TempDir()
	open := func() func() (string, error) {
		src, err := (&login.Options{Mode: "azurecli", ServerID: server, CacheDir: cache}).TokenSource()
		require.NoError(t, err)
		return func() (string, error) {
			tok, err := src.Token()
			if err != nil {
				return "", err
			}
			return tok.AccessToken, nil
		}
	}
	token := open() // a client proxy, running throughout
	must := func(got string, err error) string {
		t.Helper()
		require.NoError(t, err)
		return got
	}

	az.account("alice@contoso.com", "tenant-a")
	assert.Equal(t, "token-of-alice@contoso.com-in-tenant-a", must(token()))
	assert.Equal(t, "token-of-alice@contoso.com-in-tenant-a", must(token()))
	assert.Equal(t, "token-of-alice@contoso.com-in-tenant-a", must(open()()), "another process: from the disk cache")
	assert.Equal(t, 1, az.calls(), "cached while az's account stays")

	az.account("alice@contoso.com", "tenant-b") // az account set -s <a subscription in tenant-b>
	assert.Equal(t, "token-of-alice@contoso.com-in-tenant-b", must(token()), "the next call follows az")
	assert.Equal(t, "token-of-alice@contoso.com-in-tenant-b", must(open()()))
	assert.Equal(t, 2, az.calls())

	az.account("alice@contoso.com", "tenant-a") // and back: tenant-a's token is still good
	assert.Equal(t, "token-of-alice@contoso.com-in-tenant-a", must(token()))
	assert.Equal(t, 2, az.calls())

	az.account("", "") // az logout
	_, err := token()
	require.Error(t, err, "no token after az logout")
	assert.Contains(t, err.Error(), "az login")
	_, err = open()()
	assert.Error(t, err)

	az.account("bob@contoso.com", "tenant-a") // az login as someone else
	assert.Equal(t, "token-of-bob@contoso.com-in-tenant-a", must(token()), "never alice's token for bob")
}
