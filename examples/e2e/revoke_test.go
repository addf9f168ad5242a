package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// running is a kubectl that keeps running: its stdout line by line, its
// stderr, and how it ended.
type running struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *lockedBuffer
	exited chan struct{}
	err    error
}

func runKubectl(t *testing.T, k *kubetest.Kubectl, args ...string) *running {
	cmd, err := k.Command(ctx(t), args...)
	require.NoError(t, err)
	r := &running{cmd: cmd, lines: make(chan string, 100), stderr: &lockedBuffer{}, exited: make(chan struct{})}
	r.stdin, err = cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = r.stderr
	require.NoError(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		r.err = cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-r.exited })
	return r
}

// runCat runs kubectl exec -i … cat in the pod web, once it echoes.
func runCat(t *testing.T, k *kubetest.Kubectl) *running {
	r := runKubectl(t, k, "exec", "-i", "-n", ns, "web", "--", "cat")
	fmt.Fprintln(r.stdin, "hello")
	r.line(t, "hello")
	return r
}

// line waits for a line that contains want.
func (r *running) line(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	var seen []string
	for {
		// Lines first: kubectl may print its last and exit at once.
		select {
		case l := <-r.lines:
			if strings.Contains(l, want) {
				return l
			}
			seen = append(seen, l)
			continue
		default:
		}
		select {
		case l := <-r.lines:
			if strings.Contains(l, want) {
				return l
			}
			seen = append(seen, l)
		case <-r.exited:
			t.Fatalf("kubectl ended before printing %q (printed %q): %v, stderr %s", want, seen, r.err, lastLines(r.stderr.String(), 3))
		case <-timeout:
			t.Fatalf("kubectl never printed %q; stderr %q", want, r.stderr.String())
		}
	}
}

// ended waits for kubectl to end, up to within, and returns its exit code.
func (r *running) ended(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-r.exited:
	case <-time.After(within):
		t.Fatalf("kubectl still running after %v; stderr %q", within, r.stderr.String())
	}
	var exit *exec.ExitError
	if errors.As(r.err, &exit) {
		return exit.ExitCode()
	}
	return 0
}

// accessRevoked: alice and bob each have a watch and an exec open, alice
// through the client proxy and directly, bob directly; alice is taken off
// the access policy, and within 2 s her sessions end saying why, while
// bob's go on.
func accessRevoked(t *testing.T, c *chain) {
	c.setPolicy(t, `{"clusters":{"e2e":{"users":["oid-alice","oid-bob"]}}}`)
	defer c.setPolicy(t, basePolicy)
	tokenFor := func(upn, oid string) string {
		tok, err := c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: upn, OID: oid,
			Groups: []string{aliceGrp}, Expiry: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		return tok
	}
	aliceDirect := c.caller(t, cluster, tokenFor(aliceUPN, "oid-alice"))
	bob := c.caller(t, cluster, tokenFor("bob@contoso.com", "oid-bob"))
	aliceProxy := c.kubectl()

	batch := fmt.Sprintf("revoke-%d", time.Now().UnixNano())
	made := 0
	create := func() string {
		made++
		name := fmt.Sprintf("%s-%d", batch, made)
		manifest := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s, namespace: %s, labels: {batch: %s}}\n", name, ns, batch)
		aliceProxy.MustRun(t, ctx(t), strings.NewReader(manifest), "create", "-f", "-")
		return name
	}
	name := create()
	watch := func(k *kubetest.Kubectl) *running {
		r := runKubectl(t, k, "get", "configmaps", "-n", ns, "--watch", "-l", "batch="+batch)
		r.line(t, name)
		return r
	}
	exe := func(k *kubetest.Kubectl) *running { return runCat(t, k) }
	all := map[string]*running{
		"alice's watch through the proxy": watch(aliceProxy), "alice's exec through the proxy": exe(aliceProxy),
		"alice's watch, direct": watch(aliceDirect), "alice's exec, direct": exe(aliceDirect),
		"bob's watch": watch(bob), "bob's exec": exe(bob),
	}
	sessions := all
	// And a port-forward each way for alice.
	ln := echoListener(t)
	type forwarding struct {
		cmd    *exec.Cmd
		stderr *lockedBuffer
	}
	forwards := map[string]forwarding{}
	for which, k := range map[string]*kubetest.Kubectl{"alice's port-forward through the proxy": aliceProxy, "alice's port-forward, direct": aliceDirect} {
		cmd, stderr, conn := portForward(t, k, ln)
		defer conn.Close()
		fmt.Fprintln(conn, "hello")
		got, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "hello\n", got)
		forwards[which] = forwarding{cmd, stderr}
	}
	_, _, bobsForward := portForward(t, bob, ln)
	defer bobsForward.Close()
	bobsForwarded := bufio.NewReader(bobsForward)
	fmt.Fprintln(bobsForward, "hello")
	got, err := bobsForwarded.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "hello\n", got)
	// Every watch is open once it prints an object made after its list.
	later := create()
	for which, r := range all {
		if strings.Contains(which, "watch") {
			r.line(t, later)
		}
	}

	c.setPolicy(t, `{"clusters":{"e2e":{"users":["oid-bob"]}}}`)
	start := time.Now()
	for _, which := range []string{"alice's watch through the proxy", "alice's watch, direct"} {
		r := sessions[which]
		l := r.line(t, "Forbidden")
		assert.Contains(t, l, "no longer lets this caller reach the cluster", which)
		t.Logf("%s printed, %v after the policy was applied: %q", which, time.Since(start).Round(10*time.Millisecond), l)
	}
	for _, which := range []string{"alice's exec through the proxy", "alice's exec, direct"} {
		r := sessions[which]
		code := r.ended(t, 2*time.Second)
		assert.Equal(t, 1, code, which)
		assert.Contains(t, r.stderr.String(), "error: clusterconnect: ", which)
		t.Logf("%s ended %v after the policy was applied: exit %d, stderr %q", which, time.Since(start).Round(10*time.Millisecond), code, r.stderr.String())
	}
	for which, f := range forwards {
		exited := make(chan error, 1)
		go func() { exited <- f.cmd.Wait() }()
		select {
		case err := <-exited:
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "%s exited 0: %q", which, f.stderr.String())
			assert.Equal(t, 1, exit.ExitCode(), which)
			// The words on the forwarded connection's error stream, which
			// kubectl prints before its own.
			assert.Contains(t, f.stderr.String(), "clusterconnect: ", which)
			assert.Contains(t, f.stderr.String(), "reach", which)
			assert.True(t, strings.HasSuffix(f.stderr.String(), "error: lost connection to pod\n"), "%s: %q", which, f.stderr.String())
			t.Logf("%s ended %v after the policy was applied: exit %d, stderr %q", which, time.Since(start).Round(10*time.Millisecond), exit.ExitCode(), f.stderr.String())
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still running 5 s after the policy was applied", which)
		}
	}
	assert.Less(t, time.Since(start), 2*time.Second+500*time.Millisecond)

	// Bob's go on.
	fmt.Fprintln(bobsForward, "still here")
	got, err = bobsForwarded.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "still here\n", got, "bob's port-forward")
	fmt.Fprintln(sessions["bob's exec"].stdin, "still here")
	sessions["bob's exec"].line(t, "still here")
	bob.MustRun(t, ctx(t), nil, "delete", "configmap", later, "-n", ns)
	sessions["bob's watch"].line(t, later) // the deletion, as an event
	select {
	case <-sessions["bob's watch"].exited:
		t.Fatalf("bob's watch ended: %q", sessions["bob's watch"].stderr.String())
	default:
	}
}

// clusterRemoved: the cluster is taken out of the relay's agents file;
// alice's watch through the client proxy and her exec in direct mode end
// saying so, and the agent is disconnected; put back, it connects again.
func clusterRemoved(t *testing.T, c *chain) {
	tok, err := c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: aliceUPN, OID: "oid-alice",
		Groups: []string{aliceGrp}, Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	direct := c.caller(t, cluster, tok)
	k := c.kubectl()
	name := fmt.Sprintf("removed-%d", time.Now().UnixNano())
	k.MustRun(t, ctx(t), nil, "create", "configmap", name, "-n", ns)
	w := runKubectl(t, k, "get", "configmaps", "-n", ns, "--watch", "--field-selector", "metadata.name="+name)
	w.line(t, name)
	x := runKubectl(t, direct, "exec", "-i", "-n", ns, "web", "--", "cat")
	fmt.Fprintln(x.stdin, "hello")
	x.line(t, "hello")

	agents := filepath.Join(c.dir, "agents.json")
	before, err := os.ReadFile(agents)
	require.NoError(t, err)
	applied := strings.Count(c.logs("relay"), "agents file applied")
	writeFile(t, agents, []byte(`{"clusters":{"other":{"secret":"x"}}}`))
	defer func() {
		writeFile(t, agents, before)
		c.waitWorking(k)
	}()
	require.Eventually(t, func() bool { return strings.Count(c.logs("relay"), "agents file applied") > applied },
		30*time.Second, 100*time.Millisecond, "relay log: %s", c.logs("relay"))

	l := w.line(t, "removed")
	assert.Contains(t, l, "the cluster was removed from the relay")
	assert.Equal(t, 1, x.ended(t, 5*time.Second))
	assert.Contains(t, x.stderr.String(), "error: clusterconnect: the cluster was removed from the relay")
	res, err := k.Run(ctx(t), nil, "--cache-dir", t.TempDir(), "get", "pods", "-n", ns)
	require.NoError(t, err)
	assert.NotEqual(t, 0, res.ExitCode)
	assert.Contains(t, res.Stderr, "is not connected to the relay", "a new request finds it disconnected")
}

// nestedTakenAway: alice, allowed by RBAC to impersonate erin, has an
// exec open as erin (kubectl --as) through the client proxy and one
// directly; RBAC takes that right away, and within the agent's recheck
// (10 s) both end with the agent's words on the exec's error stream:
// kubectl prints them and exits 1, through the relay and the client
// proxy alike.
func nestedTakenAway(t *testing.T, c *chain) {
	cx := ctx(t)
	binding := fmt.Sprintf("alice-may-be-erin-%d", time.Now().UnixNano())
	require.NoError(t, c.env.Grant(cx, "erin-execs", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"get", "create"}},
	}, kubetest.User("erin@contoso.com")))
	require.NoError(t, c.env.Grant(cx, binding, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"users"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"erin@contoso.com"}},
	}, kubetest.Group(aliceGrp)))
	direct := &kubetest.Kubectl{Kubeconfig: filepath.Join(c.dir, "direct-kubeconfig")}
	var execs []*running
	for _, k := range []*kubetest.Kubectl{c.kubectl(), direct} {
		var last kubetest.Result
		require.Eventually(t, func() bool {
			res, err := k.Run(cx, nil, "get", "pod", "web", "-n", ns, "--as", "erin@contoso.com")
			last = res
			return err == nil && res.ExitCode == 0
		}, 30*time.Second, 200*time.Millisecond, "RBAC lets alice be erin: %s", &last)
		r := runKubectl(t, k, "exec", "-i", "-n", ns, "web", "--as", "erin@contoso.com", "--", "cat")
		fmt.Fprintln(r.stdin, "hello")
		r.line(t, "hello")
		execs = append(execs, r)
	}

	require.NoError(t, c.env.Client().RbacV1().ClusterRoleBindings().Delete(cx, binding, metav1.DeleteOptions{}))
	for i, r := range execs {
		assert.Equal(t, 1, r.ended(t, 30*time.Second), "exec %d", i)
		assert.Contains(t, r.stderr.String(), `error: clusterconnect: `+aliceUPN+` is not allowed to impersonate user "erin@contoso.com" any longer; the session was ended`, "exec %d", i)
	}
}
