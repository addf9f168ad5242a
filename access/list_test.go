package access_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// listPolicy: alice reaches prod (her group) and dev (anyone of tenant
// A); bob only dev; staging lets through tokens the relay cannot verify,
// and lists bob alone.
const listPolicy = `{"clusters": {
	"prod": {"groups": ["` + ops + `"]},
	"dev": {"tenants": ["` + tenantA + `"]},
	"staging": {"users": ["` + bob + `"], "passThroughUnverified": true},
	"b-only": {"tenants": ["` + tenantB + `"]}
}, "limits": {"callerRate": 1, "callerBurst": 3}}`

func (e *env) list(bearer string) (int, string) {
	r := httptest.NewRequest(http.MethodGet, "/clusters", nil)
	if bearer != "" {
		r.Header.Set("Authorization", "Bearer "+bearer)
	}
	w := httptest.NewRecorder()
	e.authz.ClustersHandler(func(id string) bool { return id == "prod" }).ServeHTTP(w, r)
	body, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(body)
}

// A signed-in caller reads the clusters it may reach, and nothing of the
// others; a caller without a token the relay verifies reads nothing of
// any cluster.
func TestClustersListsWhatTheCallerMayReach(t *testing.T) {
	e := newEnv(t, listPolicy)
	ids := func(body string) []access.ClusterStatus {
		var l access.ClusterList
		require.NoError(t, json.Unmarshal([]byte(body), &l), body)
		return l.Clusters
	}
	code, body := e.list(e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}}))
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, []access.ClusterStatus{{ID: "dev"}, {ID: "prod", Connected: true}}, ids(body))

	code, body = e.list(e.token(oidctest.EntraClaims{OID: bob}))
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, []access.ClusterStatus{{ID: "dev"}, {ID: "staging"}}, ids(body))

	code, body = e.list(e.token(oidctest.EntraClaims{OID: "carol", Tenant: tenantB}))
	require.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, []access.ClusterStatus{{ID: "b-only"}}, ids(body))

	// Nobody's: an empty list, not null.
	e2 := newEnv(t, `{"clusters": {"prod": {"groups": ["`+ops+`"]}}}`)
	code, body = e2.list(e2.token(oidctest.EntraClaims{OID: "mallory"}))
	require.Equal(t, http.StatusOK, code, body)
	assert.JSONEq(t, `{"clusters":[]}`, body)

	key, err := oidctest.NewKey(jose.RS256)
	require.NoError(t, err)
	sa, err := oidctest.Sign(key, map[string]any{"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:ci:deployer",
		"aud": []string{"https://kubernetes.default.svc"}, "exp": time.Now().Add(time.Hour).Unix()}, nil)
	require.NoError(t, err)
	for name, bearer := range map[string]string{
		"no token":      "",
		"not a token":   "garbage",
		"expired":       e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}, Expiry: time.Now().Add(-time.Hour)}),
		"another app's": e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}, Audience: "api://another"}),
		"a foreign issuer's (staging passes those through)": sa,
	} {
		t.Run(name, func(t *testing.T) {
			code, body := e.list(bearer)
			assert.Equal(t, http.StatusUnauthorized, code)
			for _, id := range []string{"prod", "dev", "staging", "b-only"} {
				assert.NotContains(t, body, `"`+id+`"`)
			}
		})
	}
}

// Listing counts against the caller's request rate: a signed-in caller
// cannot make the relay walk the policy without bound.
func TestClustersListingIsRateLimited(t *testing.T) {
	e := newEnv(t, listPolicy)
	alice := e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}})
	codes := map[int]int{}
	for range 10 {
		code, _ := e.list(alice)
		codes[code]++
	}
	assert.Equal(t, 3, codes[http.StatusOK], "the burst: %v", codes)
	assert.Equal(t, 7, codes[http.StatusTooManyRequests], "%v", codes)
	code, _ := e.list(e.token(oidctest.EntraClaims{OID: bob}))
	assert.Equal(t, http.StatusOK, code, "another caller has its own budget")

	r := httptest.NewRequest(http.MethodPost, "/clusters", nil)
	w := httptest.NewRecorder()
	e.authz.ClustersHandler(nil).ServeHTTP(w, r)
	assert.Equal(t, http.StatusMethodNotAllowed, w.Code, fmt.Sprint(w.Body))
}
