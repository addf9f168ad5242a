package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// refusedWithAnEmptyCache: in direct mode, with no discovery cache (the
// first command a user runs, a CI job's every command), kubectl reads the
// discovery roots raw and prints fixed words for a 401 or 503. What was
// wrong and what to do reach it all the same, once: from the exec
// plugin, which stops a token it can see the relay would refuse, or from
// the relay, as a Warning kubectl prints before its own words.
func refusedWithAnEmptyCache(t *testing.T, c *chain) {
	otherTenant := "66666666-6666-4666-8666-666666666666"
	token := func(cl oidctest.EntraClaims) string {
		cl.UPN, cl.OID, cl.Groups = aliceUPN, "oid-alice", []string{aliceGrp}
		tok, err := c.issuer.EntraToken(cl)
		require.NoError(t, err)
		return tok
	}
	expired := token(oidctest.EntraClaims{Tenant: tenant, Audience: audience, Expiry: time.Now().Add(-time.Minute)})
	wrongAudience := token(oidctest.EntraClaims{Tenant: tenant, Audience: "api://another-app"})
	wrongTenant := token(oidctest.EntraClaims{Tenant: otherTenant, Audience: audience})

	// plugin is a direct-mode kubeconfig written by the proxy, whose
	// plugin reads the token from a file, for this cluster's tenant.
	plugin := func(t *testing.T, tok string) *kubetest.Kubectl {
		dir := t.TempDir()
		file := writeFile(t, filepath.Join(dir, "token"), []byte(tok))
		kc := filepath.Join(dir, "kubeconfig")
		out, err := exec.Command(filepath.Join(c.bin, "proxy"), "kubeconfig", "-relay-url", "https://"+c.relayAddr, "-relay-ca", c.relayCA,
			"-cluster-id", cluster, "-token-file", file, "-tenant-id", tenant, "-token-cache-dir", filepath.Join(dir, "tokens"), "-kubeconfig", kc).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return &kubetest.Kubectl{Kubeconfig: kc}
	}
	for _, tc := range []struct {
		name string
		k    func(t *testing.T) *kubetest.Kubectl
		said string // once, and before kubectl's own words
	}{
		{"an expired token, from the exec plugin", func(t *testing.T) *kubetest.Kubectl { return plugin(t, expired) },
			"proxy: login: the token would be refused: the token in "},
		{"a token of another tenant, from the exec plugin", func(t *testing.T) *kubetest.Kubectl { return plugin(t, wrongTenant) },
			"is of tenant " + otherTenant + ", and this cluster's sign-in is for tenant " + tenant + " (-tenant-id)"},
		{"an expired token, from another plugin (kubelogin) or a file", func(t *testing.T) *kubetest.Kubectl { return c.caller(t, cluster, expired) },
			"Warning: the relay did not accept the token: tokens: token expired at "},
		{"a token for another app", func(t *testing.T) *kubetest.Kubectl { return c.caller(t, cluster, wrongAudience) },
			`Warning: the relay did not accept the token: tokens: wrong audience: audience ["api://another-app"] is not one of ["` + audience + `"]; get a token for the cluster's server app`},
		{"a token of another tenant", func(t *testing.T) *kubetest.Kubectl { return c.caller(t, cluster, wrongTenant) },
			"is not trusted; sign in to a tenant this relay accepts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tc.k(t).Run(ctx(t), nil, "get", "pods", "-n", ns, "--cache-dir", t.TempDir())
			require.NoError(t, err)
			t.Logf("kubectl printed, exit %d:\n%s", res.ExitCode, res.Stderr)
			assert.Equal(t, 1, res.ExitCode)
			assert.Equal(t, 1, strings.Count(res.Stderr, tc.said), "said once")
			first, _, _ := strings.Cut(res.Stderr, "\n")
			assert.Contains(t, first, tc.said, "before kubectl's own words")
		})
	}

	t.Run("a cluster that is not connected", func(t *testing.T) {
		c.setPolicy(t, `{"clusters":{"e2e":{"groups":["`+aliceGrp+`"]},"e2e-offline":{"groups":["`+aliceGrp+`"]}}}`)
		defer c.setPolicy(t, basePolicy)
		res, err := c.caller(t, "e2e-offline", token(oidctest.EntraClaims{Tenant: tenant, Audience: audience})).
			Run(ctx(t), nil, "get", "pods", "-n", ns, "--cache-dir", t.TempDir())
		require.NoError(t, err)
		t.Logf("kubectl printed, exit %d:\n%s", res.ExitCode, res.Stderr)
		assert.Equal(t, 1, res.ExitCode)
		lines := strings.Split(strings.TrimSpace(res.Stderr), "\n")
		assert.Contains(t, lines[len(lines)-1], `Error from server (InternalError): an error on the server ("cluster \"e2e-offline\" is not connected to the relay: check that its agent is running and can reach the relay")`)
	})
}
