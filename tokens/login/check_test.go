package login_test

import (
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/tokens/login"
)

// jwt is an unsigned token with these claims: CheckToken reads, never
// verifies.
func jwt(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + ".c2ln"
}

// A token the relay would refuse for what the client can see is stopped
// with what to do, in the words of where it came from.
func TestCheckToken(t *testing.T) {
	now := time.Date(2026, 12, 6, 17, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Minute).Unix(), now.Add(time.Hour).Unix()
	other := "11111111-2222-4333-8444-555555555555"
	for _, tt := range []struct {
		name string
		o    login.Options
		tok  *oauth2.Token
		want string // "" passes
	}{
		{"a fresh token", login.Options{Mode: "azurecli", TenantID: tenant},
			&oauth2.Token{AccessToken: jwt(fmt.Sprintf(`{"exp":%d,"tid":%q}`, future, tenant))}, ""},
		{"az's token expired", login.Options{Mode: "azurecli"},
			&oauth2.Token{AccessToken: jwt(fmt.Sprintf(`{"exp":%d}`, past))}, "the token az gave expired at 2026-12-06T16:59:00Z: run az login"},
		{"the source's expiry decides over the token's", login.Options{TokenFile: "/run/token"},
			&oauth2.Token{AccessToken: jwt(fmt.Sprintf(`{"exp":%d}`, future)), Expiry: now}, "the token in /run/token expired at 2026-12-06T17:00:00Z: put a new one there"},
		{"az on another tenant", login.Options{Mode: "azurecli", TenantID: tenant},
			&oauth2.Token{AccessToken: jwt(fmt.Sprintf(`{"exp":%d,"tid":%q}`, future, other))},
			"az gave is of tenant " + other + ", and this cluster's sign-in is for tenant " + tenant + " (-tenant-id): run az login --tenant " + tenant},
		{"no -tenant-id: any tenant passes, the relay decides", login.Options{Mode: "azurecli"},
			&oauth2.Token{AccessToken: jwt(fmt.Sprintf(`{"exp":%d,"tid":%q}`, future, other))}, ""},
		{"a static token", login.Options{Token: "x"}, &oauth2.Token{AccessToken: jwt(fmt.Sprintf(`{"exp":%d}`, past))}, "given with -token expired"},
		{"a signed-in token", login.Options{Mode: "devicecode"}, &oauth2.Token{AccessToken: jwt(fmt.Sprintf(`{"exp":%d}`, past))}, "proxy logout"},
		{"a signed use of a PoP token, made to expire at once", login.Options{Mode: "devicecode", PoPHost: "h"},
			&oauth2.Token{AccessToken: jwt(`{"ts":1700000000}`), TokenType: "pop", Expiry: now}, ""},
		{"not a JWT: the relay decides", login.Options{Token: "x"}, &oauth2.Token{AccessToken: "opaque"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.CheckToken(tt.tok, now)
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, login.ErrUnusable)
			assert.ErrorContains(t, err, tt.want)
		})
	}
}
