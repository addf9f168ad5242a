package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/internal/tlsfile"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// discovery: a signed-in user asks the relay which clusters they may
// reach (proxy clusters), and gets a context for each (-all), served
// directly or by one client proxy; what others may reach stays unseen.
func discovery(t *testing.T, c *chain) {
	const hiddenGrp = "77777777-7777-4777-8777-777777777777"
	c.setPolicy(t, `{"clusters":{"e2e":{"groups":["`+aliceGrp+`"]},"e2e-offline":{"groups":["`+aliceGrp+`"]},"finance":{"groups":["`+hiddenGrp+`"]}}}`)
	defer c.setPolicy(t, basePolicy)
	proxy := func(t *testing.T, args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(filepath.Join(c.bin, "proxy"), args...)
		cmd.Env = append(os.Environ(), kubetest.HomeEnv()...)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		cmd.Run()
		return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
	}
	relay := []string{"-relay-url", "https://" + c.relayAddr, "-relay-ca", c.relayCA}
	tokenFile := func(t *testing.T, cl oidctest.EntraClaims) string {
		cl.Tenant, cl.Audience = tenant, audience
		tok, err := c.issuer.EntraToken(cl)
		require.NoError(t, err)
		return writeFile(t, filepath.Join(t.TempDir(), "token"), []byte(tok))
	}
	alice := tokenFile(t, oidctest.EntraClaims{UPN: aliceUPN, OID: "oid-alice", Groups: []string{aliceGrp}})

	t.Run("proxy clusters: what alice may reach, and whether it is connected", func(t *testing.T) {
		out, stderr, code := proxy(t, append([]string{"clusters", "-token-file", alice}, relay...)...)
		require.Equal(t, 0, code, stderr)
		assert.Equal(t, "CLUSTER       CONNECTED\ne2e           yes\ne2e-offline   no\n", out)
	})

	t.Run("proxy clusters: a stranger reaches nothing, a bad token is told why", func(t *testing.T) {
		mallory := tokenFile(t, oidctest.EntraClaims{UPN: "mallory@contoso.com", OID: "oid-mallory"})
		out, stderr, code := proxy(t, append([]string{"clusters", "-token-file", mallory}, relay...)...)
		assert.Equal(t, 0, code, stderr)
		assert.Empty(t, out)
		assert.Contains(t, stderr, "the relay lets you reach no cluster")

		bad := writeFile(t, filepath.Join(t.TempDir(), "token"), []byte("not-a-token"))
		out, stderr, code = proxy(t, append([]string{"clusters", "-token-file", bad}, relay...)...)
		assert.Equal(t, 1, code)
		assert.Empty(t, out)
		assert.Contains(t, stderr, "proxy: clientproxy: the relay did not list the clusters (401 Unauthorized): the relay did not accept the token: tokens: malformed token")
	})

	t.Run("without a token, the relay's list says nothing of any cluster", func(t *testing.T) {
		roots, _, err := tlsfile.Pool(c.relayCA)
		require.NoError(t, err)
		client := tlsfile.Client(roots, 10*time.Second)
		for _, auth := range []string{"", "Bearer not-a-token", "Basic YWxpY2U6cHc="} {
			req, _ := http.NewRequest(http.MethodGet, "https://"+c.relayAddr+"/clusters", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := client.Do(req)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			body := string(b)
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, body)
			for _, id := range []string{"e2e", "finance"} {
				assert.NotContains(t, body, `"`+id+`"`, auth)
			}
		}
	})

	t.Run("proxy kubeconfig -all: a direct context per cluster", func(t *testing.T) {
		kc := filepath.Join(t.TempDir(), "kubeconfig")
		_, stderr, code := proxy(t, append([]string{"kubeconfig", "-all", "-token-file", alice, "-kubeconfig", kc}, relay...)...)
		require.Equal(t, 0, code, stderr)
		assert.Contains(t, stderr, `context "e2e"`)
		assert.Contains(t, stderr, `context "e2e-offline"`)
		k := &kubetest.Kubectl{Kubeconfig: kc}
		assert.Equal(t, "e2e e2e-offline", strings.Join(strings.Fields(k.MustRun(t, ctx(t), nil, "config", "get-contexts", "-o", "name")), " "))
		assert.Equal(t, aliceUPN, k.MustRun(t, ctx(t), nil, "--context", "e2e", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"))
	})

	t.Run("proxy serve -all: one client proxy serves a context per cluster", func(t *testing.T) {
		kc := filepath.Join(t.TempDir(), "kubeconfig")
		p := c.startProxy("proxy-all", kc, "-all")
		defer p.kill()
		k := &kubetest.Kubectl{Kubeconfig: kc}
		require.Eventually(t, func() bool {
			res, err := k.Run(ctx(t), nil, "--context", "e2e", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
			return err == nil && res.ExitCode == 0 && res.Stdout == aliceUPN
		}, 30*time.Second, 200*time.Millisecond, "proxy log: %s", c.logs("proxy-all"))
		assert.Equal(t, "e2e", strings.TrimSpace(k.MustRun(t, ctx(t), nil, "config", "current-context")), "-cluster-id's context first, and current")
		res, err := k.Run(ctx(t), nil, "--context", "e2e-offline", "get", "pods", "--cache-dir", t.TempDir())
		require.NoError(t, err)
		assert.Equal(t, 1, res.ExitCode)
		assert.Contains(t, res.Stderr, `cluster \"e2e-offline\" is not connected to the relay`, "the same proxy, the other cluster")
	})
}
