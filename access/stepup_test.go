package access_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

const stepUpPolicy = `{"clusters": {"prod": {"groups": ["` + ops + `"], "stepUp": [
	{"authContext": "c1", "resources": ["pods/exec", "pods/attach", "pods/portforward"]},
	{"authContext": "c2", "resources": ["secrets"], "verbs": ["create", "update", "patch", "delete", "deletecollection"]}
]}}}`

func (e *env) askRequest(method, path, bearer string) (*tunnel.AccessError, func()) {
	r := httptest.NewRequest(method, path, nil)
	r.Header.Set("Authorization", "Bearer "+bearer)
	release, err := e.authz.AuthorizeClient(r, "prod")
	if err == nil {
		return nil, release
	}
	ae, ok := err.(*tunnel.AccessError)
	require.True(e.t, ok, "%v", err)
	return ae, nil
}

// Requests a stepUp rule covers pass only with its authentication
// context; the others pass with a plain token, and the refusal is a
// claims challenge in Entra's form.
func TestStepUp(t *testing.T) {
	e := newEnv(t, stepUpPolicy)
	plain := e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}})
	c1 := e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}, Extra: map[string]any{"acrs": []string{"c1"}}})
	for _, tt := range []struct {
		name, method, path, token string
		want                      string // "" passes, else the contexts challenged
	}{
		{"get pods, plain", "GET", "/clusters/prod/api/v1/namespaces/web/pods", plain, ""},
		{"exec, plain", "POST", "/clusters/prod/api/v1/namespaces/web/pods/nginx/exec?command=sh", plain, "c1"},
		{"exec over WebSocket, plain", "GET", "/clusters/prod/api/v1/namespaces/web/pods/nginx/exec?command=sh", plain, "c1"},
		{"exec with c1", "POST", "/clusters/prod/api/v1/namespaces/web/pods/nginx/exec", c1, ""},
		{"port-forward, plain", "POST", "/clusters/prod/api/v1/namespaces/web/pods/nginx/portforward", plain, "c1"},
		{"logs, plain", "GET", "/clusters/prod/api/v1/namespaces/web/pods/nginx/log", plain, ""},
		{"read a secret, plain", "GET", "/clusters/prod/api/v1/namespaces/web/secrets/tls", plain, ""},
		{"write a secret with c1", "PUT", "/clusters/prod/api/v1/namespaces/web/secrets/tls", c1, "c2"},
		{"delete the secrets, plain", "DELETE", "/clusters/prod/api/v1/namespaces/web/secrets", plain, "c2"},
		{"write a configmap, plain", "POST", "/clusters/prod/api/v1/namespaces/web/configmaps", plain, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			refused, release := e.askRequest(tt.method, tt.path, tt.token)
			if tt.want == "" {
				require.Nil(t, refused)
				release()
				return
			}
			require.NotNil(t, refused)
			assert.Equal(t, http.StatusUnauthorized, refused.Code)
			m := regexp.MustCompile(`^Bearer realm="clusterconnect", error="insufficient_claims", claims="([^"]+)"$`).FindStringSubmatch(refused.Challenge)
			require.Len(t, m, 2, refused.Challenge)
			claims, err := base64.StdEncoding.DecodeString(m[1])
			require.NoError(t, err)
			assert.JSONEq(t, `{"access_token":{"acrs":{"essential":true,"value":"`+tt.want+`"}}}`, string(claims))
			assert.Contains(t, refused.Message, "authentication context "+tt.want)
		})
	}

	refused, _ := e.askRequest("POST", "/clusters/prod/api/v1/namespaces/web/pods/nginx/./exec", plain)
	require.NotNil(t, refused, "a path spelt another way is not a way around a rule")
	assert.Equal(t, http.StatusBadRequest, refused.Code)
}

// The plugin's question: the challenge its caller last got, once, and
// only its own.
func TestChallengeHandler(t *testing.T) {
	e := newEnv(t, stepUpPolicy)
	alice := e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}})
	bob := e.token(oidctest.EntraClaims{OID: bob, Groups: []string{ops}})
	mux := http.NewServeMux()
	mux.Handle("GET /challenges/{cluster}", e.authz.ChallengeHandler())
	ask := func(bearer string) (int, string) {
		r := httptest.NewRequest("GET", "/challenges/prod", nil)
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Code, string(b)
	}
	code, _ := ask(alice)
	assert.Equal(t, http.StatusNoContent, code, "none yet")

	refused, _ := e.askRequest("POST", "/clusters/prod/api/v1/namespaces/web/pods/nginx/exec", alice)
	require.NotNil(t, refused)
	code, _ = ask(bob)
	assert.Equal(t, http.StatusNoContent, code, "Alice's challenge is hers")
	code, _ = ask("")
	assert.Equal(t, http.StatusUnauthorized, code)
	code, body := ask(alice)
	assert.Equal(t, http.StatusOK, code)
	want, _ := json.Marshal(map[string]string{"claims": access.ClaimsChallenge("c1")})
	assert.JSONEq(t, string(want), body)
	code, _ = ask(alice)
	assert.Equal(t, http.StatusNoContent, code, "given once")
}

func TestStepUpPolicyMistakes(t *testing.T) {
	for policy, want := range map[string]string{
		`{"clusters":{"p":{"stepUp":[{"resources":["pods/exec"]}]}}}`:                   `authContext ""`,
		`{"clusters":{"p":{"stepUp":[{"authContext":"c1"}]}}}`:                          "resources is required",
		`{"clusters":{"p":{"stepUp":[{"authContext":"c 1","resources":["secrets"]}]}}}`: `authContext "c 1"`,
		`{"clusters":{"p":{"stepUp":[{"authContext":"c1","resources":[""]}]}}}`:         "an empty resource",
		`{"clusters":{"p":{"stepUp":[{"authContext":"c1","resource":["secrets"]}]}}}`:   "unknown field",
	} {
		_, err := access.ParsePolicy([]byte(policy))
		assert.ErrorContains(t, err, want, policy)
	}
}
