package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// stepUpPolicy: Alice's group reaches the cluster; an exec needs
// authentication context c1, a ConfigMap's creation c2 (in production it
// would be Secrets: Alice's RBAC here lets her write ConfigMaps).
const stepUpPolicy = `{"clusters":{"e2e":{"groups":["` + aliceGrp + `"],"stepUp":[
	{"authContext":"c1","resources":["pods/exec","pods/attach","pods/portforward"]},
	{"authContext":"c2","resources":["configmaps"],"verbs":["create","update","patch"]}]}}}`

// stepUp: a get passes with Alice's plain sign-in; her first exec asks
// for a stronger one, which the client proxy gets by signing her in
// again — the Entra stand-in plays her at the device login, meeting what
// the challenge asks — and the exec goes on as if nothing happened; her
// second exec needs no sign-in. In direct mode kubectl runs its exec
// plugin again only after the last try's 401 (a refused WebSocket does
// not, and its SPDY fallback is the last): the plugin steps up then, and
// kubectl, having stopped, says to run the command again, which passes.
func stepUp(t *testing.T, c *chain) {
	c.setPolicy(t, stepUpPolicy)
	defer c.setPolicy(t, basePolicy)
	c.issuer.AddApp(oidctest.App{ClientID: "04b07795-8ddb-461a-bbee-02f9e1bf7b46", Tenant: tenant, Public: true})
	approve, stop := context.WithCancel(context.Background())
	defer stop()
	logins := make(chan oidctest.DeviceLogin, 10)
	go func() {
		for {
			l, err := c.issuer.NextDeviceLogin(approve)
			if err != nil {
				return
			}
			logins <- *l
			c.issuer.ApproveDevice(l.UserCode, oidctest.EntraClaims{UPN: aliceUPN, OID: "oid-alice", Groups: []string{aliceGrp}})
		}
	}()
	signIns := func() (n int, claims []string) {
		for {
			select {
			case l := <-logins:
				n++
				if l.Claims != "" {
					claims = append(claims, l.Claims)
				}
			default:
				return n, claims
			}
		}
	}
	signIn := []string{"-login", "devicecode", "-server-id", audience, "-tenant-id", tenant,
		"-authority-host", c.issuer.AuthorityHost(), "-authority-ca", filepath.Join(c.dir, "issuer-ca.crt")}
	timed := func(k *kubetest.Kubectl, stdin string, args ...string) (kubetest.Result, time.Duration) {
		start := time.Now()
		res, err := k.Run(ctx(t), strings.NewReader(stdin), args...)
		require.NoError(t, err)
		return res, time.Since(start)
	}
	const in = "typed into production\n"

	t.Run("direct mode: the exec plugin steps up when kubectl runs it after the 401", func(t *testing.T) {
		kc := filepath.Join(t.TempDir(), "kubeconfig")
		out, err := exec.Command(filepath.Join(c.bin, "proxy"), append([]string{"kubeconfig", "-relay-url", "https://" + c.relayAddr, "-relay-ca", c.relayCA,
			"-cluster-id", cluster, "-kubeconfig", kc, "-token-cache-dir", filepath.Join(t.TempDir(), "tokens")}, signIn...)...).CombinedOutput()
		require.NoError(t, err, "%s", out)
		k := &kubetest.Kubectl{Kubeconfig: kc}
		cache := t.TempDir()

		res, d := timed(k, "", "--cache-dir", cache, "get", "pods", "-n", ns, "-o", "name")
		require.Equal(t, 0, res.ExitCode, res.Stderr)
		n, claims := signIns()
		assert.Equal(t, 1, n, "Alice signs in once")
		assert.Empty(t, claims, "plainly")
		t.Logf("get, signing in: %v", d)
		res, d = timed(k, "", "--cache-dir", cache, "get", "pods", "-n", ns, "-o", "name")
		require.Equal(t, 0, res.ExitCode, res.Stderr)
		t.Logf("get, token cached: %v", d)

		res, d = timed(k, in, "--cache-dir", cache, "exec", "-i", "-n", ns, "web", "--", "cat")
		t.Logf("exec, stepping up: %v; kubectl printed, exit %d:\n%s", d, res.ExitCode, res.Stderr)
		assert.Equal(t, 1, res.ExitCode)
		assert.Contains(t, res.Stderr, "enter the code", "Alice is asked to sign in again")
		assert.Contains(t, res.Stderr, "this cluster asks for a stronger sign-in (authentication context c1) to create pods/exec")
		assert.Contains(t, res.Stderr, "if kubectl stopped here, run the command again")
		n, claims = signIns()
		assert.Equal(t, 1, n, "the exec asked for one more sign-in")
		assert.Equal(t, []string{`{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`}, claims)

		res, d = timed(k, in, "--cache-dir", cache, "exec", "-i", "-n", ns, "web", "--", "cat")
		require.Equal(t, 0, res.ExitCode, res.Stderr)
		assert.Equal(t, in, res.Stdout)
		n, _ = signIns()
		assert.Zero(t, n, "the stronger token is kept")
		t.Logf("exec, stepped up already: %v", d)
	})

	t.Run("through the client proxy: an exec and a ConfigMap's creation step up, kubectl sees nothing of it", func(t *testing.T) {
		signIns() // what the last subtest left, if it failed
		kc := filepath.Join(t.TempDir(), "kubeconfig")
		p := c.startAs("proxy-stepup", "proxy", append([]string{"serve", "-relay-url", "https://" + c.relayAddr, "-relay-ca", c.relayCA,
			"-cluster-id", cluster, "-port", strconv.Itoa(freePort(t)), "-kubeconfig", kc, "-token-cache-dir", filepath.Join(t.TempDir(), "tokens")}, signIn...)...)
		defer p.kill()
		k := &kubetest.Kubectl{Kubeconfig: kc}
		require.Eventually(t, func() bool {
			res, err := k.Run(ctx(t), nil, "get", "pods", "-n", ns, "-o", "name")
			return err == nil && res.ExitCode == 0
		}, 30*time.Second, 200*time.Millisecond, "proxy log: %s", c.logs("proxy-stepup"))
		n, claims := signIns()
		assert.Equal(t, 1, n)
		assert.Empty(t, claims)

		res, d := timed(k, in, "exec", "-i", "-n", ns, "web", "--", "cat")
		require.Equal(t, 0, res.ExitCode, res.Stderr)
		assert.Equal(t, in, res.Stdout)
		assert.Empty(t, res.Stderr)
		n, claims = signIns()
		assert.Equal(t, 1, n)
		assert.Equal(t, []string{`{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`}, claims)
		t.Logf("exec through the proxy, stepping up: %v", d)
		res, d = timed(k, in, "exec", "-i", "-n", ns, "web", "--", "cat")
		require.Equal(t, 0, res.ExitCode, res.Stderr)
		n, _ = signIns()
		assert.Zero(t, n)
		t.Logf("exec through the proxy, stepped up already: %v", d)

		res, _ = timed(k, "", "create", "configmap", "stepped", "-n", ns, "--from-literal=k=v")
		require.Equal(t, 0, res.ExitCode, res.Stderr)
		assert.Empty(t, res.Stderr)
		n, claims = signIns()
		assert.Equal(t, 1, n, "a ConfigMap's creation asks for c2")
		assert.Equal(t, []string{`{"access_token":{"acrs":{"essential":true,"value":"c2"}}}`}, claims)
		assert.Equal(t, "v", k.MustRun(t, ctx(t), nil, "get", "configmap", "stepped", "-n", ns, "-o", "jsonpath={.data.k}"), "created with its body")
		assert.Contains(t, c.logs("proxy-stepup"), "signed in again for a stronger sign-in the relay asked for")
		k.Run(ctx(t), nil, "delete", "configmap", "stepped", "-n", ns)
	})

	t.Run("a sign-in that cannot step up: kubectl says why", func(t *testing.T) {
		res, err := c.caller(t, cluster, c.tokenOf(t, aliceUPN, "oid-alice", time.Now().Add(time.Hour))).
			Run(ctx(t), strings.NewReader(in), "exec", "-i", "-n", ns, "web", "--", "cat")
		require.NoError(t, err)
		t.Logf("kubectl printed, exit %d:\n%s", res.ExitCode, res.Stderr)
		assert.Equal(t, 1, res.ExitCode)
		assert.Contains(t, res.Stderr, "this cluster asks for a stronger sign-in (authentication context c1) to create pods/exec")
	})
}
