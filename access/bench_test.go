package access_test

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// BenchmarkAuthorize is the front door's cost per request: verify (from
// the cache, or a full signature check), policy, limits, release; with
// stepUp rules, the request read as kube-apiserver reads it and checked
// against them (kubectl's list of pods, which no rule covers).
func BenchmarkAuthorize(b *testing.B) {
	for _, mode := range []struct {
		name   string
		cache  int
		forged bool // a known key ID and a random signature, new each time
		stepUp bool
	}{{"cached", 0, false, false}, {"uncached", -1, false, false}, {"forged", 0, true, false}, {"cached,stepUp", 0, false, true}} {
		b.Run(mode.name, func(b *testing.B) {
			is, err := oidctest.Start()
			require.NoError(b, err)
			defer is.Close()
			issuers, err := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenantA}, Audiences: []string{audience}, DiscoveryURL: is.EntraDiscoveryURL})
			require.NoError(b, err)
			v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: is.Client(), CacheSize: mode.cache})
			require.NoError(b, err)
			rules := ""
			if mode.stepUp {
				rules = `, "stepUp": [{"authContext": "c1", "resources": ["pods/exec", "pods/attach", "pods/portforward"]},
					{"authContext": "c2", "resources": ["secrets"], "verbs": ["create", "update", "patch", "delete"]}]`
			}
			p, err := access.ParsePolicy([]byte(`{"clusters": {"prod": {"groups": ["` + ops + `"]` + rules + `}}, "limits": {"callerRate": 1e9, "callerBurst": 1000000000, "clusterRate": 1e9, "clusterBurst": 1000000000}}`))
			require.NoError(b, err)
			a, err := access.New(&access.Config{Verifier: v, Policy: p})
			require.NoError(b, err)
			tok, err := is.EntraToken(oidctest.EntraClaims{Tenant: tenantA, Audience: audience, OID: alice, Groups: []string{ops}})
			require.NoError(b, err)
			r := httptest.NewRequest(http.MethodGet, "/clusters/prod/api/v1/namespaces/web/pods?limit=500", nil)
			r.Header.Set("Authorization", "Bearer "+tok)
			parts := strings.Split(tok, ".")
			sig, err := base64.RawURLEncoding.DecodeString(parts[2])
			require.NoError(b, err)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if mode.forged {
					rand.Read(sig)
					r.Header.Set("Authorization", "Bearer "+parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(sig))
					if _, err := a.AuthorizeClient(r, "prod"); err == nil {
						b.Fatal("a forged token was let in")
					}
					continue
				}
				release, err := a.AuthorizeClient(r, "prod")
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
		})
	}
}
