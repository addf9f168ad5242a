package kubetest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func admin(env *kubetest.Env, extraEnv ...string) *kubetest.Kubectl {
	return &kubetest.Kubectl{Kubeconfig: env.Kubeconfig, Env: extraEnv}
}

// The API server honours impersonation headers from a user allowed to send
// them: the basis of the impersonate package.
func TestWhoAmIShowsImpersonatedUserAndGroup(t *testing.T) {
	env := kubetest.Shared(t)
	ctx := testContext(t)

	out := admin(env).MustRun(t, ctx, nil, "auth", "whoami", "--as", "alice", "--as-group", "g1", "-o", "json")

	var review authenticationv1.SelfSubjectReview
	require.NoError(t, json.Unmarshal([]byte(out), &review), out)
	assert.Equal(t, "alice", review.Status.UserInfo.Username)
	assert.Contains(t, review.Status.UserInfo.Groups, "g1")
	assert.NotContains(t, review.Status.UserInfo.Groups, "system:masters", "the impersonated user must not keep the admin's groups")
}

func TestRBACDeniesUntilGranted(t *testing.T) {
	env := kubetest.Shared(t)
	ctx := testContext(t)
	sa, err := env.CreateServiceAccount(ctx, "rbac-test", "reader")
	require.NoError(t, err)
	k := &kubetest.Kubectl{Kubeconfig: sa.Kubeconfig}

	res, err := k.Run(ctx, nil, "get", "pods", "-n", "rbac-test")
	require.NoError(t, err)
	assert.NotEqual(t, 0, res.ExitCode)
	assert.Contains(t, res.Stderr, "forbidden")
	assert.Contains(t, res.Stderr, sa.Username())

	rules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}}
	require.NoError(t, env.Grant(ctx, "rbac-test-list-pods", rules, sa.Subject()))
	// The authorizer learns of new bindings through a watch: wait for it.
	require.Eventually(t, func() bool {
		res, err := k.Run(ctx, nil, "get", "pods", "-n", "rbac-test")
		return err == nil && res.ExitCode == 0
	}, 30*time.Second, 100*time.Millisecond, "the granted list permission never took effect")

	res, err = k.Run(ctx, nil, "create", "configmap", "not-granted", "-n", "rbac-test")
	require.NoError(t, err)
	assert.NotEqual(t, 0, res.ExitCode, "creating config maps was never granted")
	assert.Contains(t, res.Stderr, "forbidden")
}

// nodes holds the stand-in node of each environment (a -count run gets a
// fresh environment).
var nodes = map[*kubetest.Env]*kubetest.Node{}

// standInPod creates a fresh running pod on the package's stand-in node.
func standInPod(t *testing.T, ctx context.Context) (env *kubetest.Env, n *kubetest.Node, ns, pod string) {
	env = kubetest.Shared(t)
	node := nodes[env]
	if node == nil {
		var err error
		node, err = env.StartNode(ctx, "stand-in")
		require.NoError(t, err)
		nodes[env] = node
	}
	ns = "streams"
	pod = strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	_, err := node.CreatePod(ctx, ns, pod)
	require.NoError(t, err)
	return env, node, ns, pod
}

// kubectl exec over both protocols kubectl speaks; the API server turns
// either into SPDY towards the node.
func TestExec(t *testing.T) {
	ctx := testContext(t)
	env, _, ns, pod := standInPod(t, ctx)
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"websocket", nil},
		{"spdy", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := admin(env, tc.env...)
			input := "stdin round trip over " + tc.name + "\nsecond line\n"
			out := k.MustRun(t, ctx, strings.NewReader(input), "exec", "-i", "-n", ns, pod, "--", "cat")
			assert.Equal(t, input, out)

			out = k.MustRun(t, ctx, nil, "exec", "-n", ns, pod, "--", "echo", "hello", tc.name)
			assert.Equal(t, "hello "+tc.name+"\n", out)

			res, err := k.Run(ctx, nil, "exec", "-n", ns, pod, "--", "exit", "3")
			require.NoError(t, err)
			assert.Equal(t, 3, res.ExitCode, "the exit status crosses the API server: %s", res.Stderr)

			res, err = k.Run(ctx, nil, "exec", "-n", ns, pod, "--", "stderr", "to stderr")
			require.NoError(t, err)
			assert.Equal(t, 0, res.ExitCode)
			assert.Empty(t, res.Stdout)
			assert.Contains(t, res.Stderr, "to stderr")
		})
	}
}

func TestAttach(t *testing.T) {
	ctx := testContext(t)
	env, _, ns, pod := standInPod(t, ctx)
	out := admin(env).MustRun(t, ctx, strings.NewReader("attached input\n"), "attach", "-i", "-n", ns, pod)
	assert.Contains(t, out, "attached input\n")
}

func TestPortForwardCarriesBytes(t *testing.T) {
	ctx := testContext(t)
	env, _, ns, pod := standInPod(t, ctx)
	target := echoServer(t)

	cmd, err := admin(env).Command(ctx, "port-forward", "-n", ns, "pod/"+pod, ":"+strconv.Itoa(target))
	kubetest.Require(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "kubectl port-forward printed no address; stderr: %s", stderr.String())
	m := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)`).FindStringSubmatch(line)
	require.NotNil(t, m, "unexpected port-forward output %q", line)
	require.Equal(t, strconv.Itoa(target), m[2])

	for i := range 2 { // two connections over the one forward
		conn, err := net.Dial("tcp", "127.0.0.1:"+m[1])
		require.NoError(t, err)
		msg := fmt.Sprintf("ping %d through the API server\n", i)
		_, err = io.WriteString(conn, msg)
		require.NoError(t, err)
		got, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err, "stderr: %s", stderr.String())
		assert.Equal(t, msg, got)
		conn.Close()
	}
}

func TestLogsFollowStreams(t *testing.T) {
	ctx := testContext(t)
	env, n, ns, pod := standInPod(t, ctx)
	require.NoError(t, n.Log(ns, pod, "before follow"))

	cmd, err := admin(env).Command(ctx, "logs", "-f", "-n", ns, pod)
	kubetest.Require(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)

	require.True(t, lines.Scan(), "no log line: %v", lines.Err())
	assert.Equal(t, "before follow", lines.Text())

	// This line is written only after kubectl has printed the first one, so
	// it can arrive only if the stream stays open and is flushed.
	require.NoError(t, n.Log(ns, pod, "while following"))
	require.True(t, lines.Scan(), "no followed line: %v", lines.Err())
	assert.Equal(t, "while following", lines.Text())
}

// echoServer listens on loopback and echoes each connection back to itself.
func echoServer(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	kubetest.Echo(ln)
	return ln.Addr().(*net.TCPAddr).Port
}

// kubectl version works, as it does against a real cluster: the API
// server is stamped with its version, as Kubernetes' own build stamps it.
func TestKubectlVersion(t *testing.T) {
	env := kubetest.Shared(t)
	out := admin(env).MustRun(t, testContext(t), nil, "version", "-o", "json")
	var v struct {
		ServerVersion struct{ GitVersion, Major, Minor string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	assert.Equal(t, kubetest.KubeVersion, v.ServerVersion.GitVersion)
	assert.Equal(t, "1", v.ServerVersion.Major)
	assert.NotEmpty(t, v.ServerVersion.Minor)
}
