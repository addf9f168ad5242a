package impersonate_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// nodes holds the stand-in node of each environment.
var nodes = map[*kubetest.Env]*kubetest.Node{}

// streamsSetup gives Erin, a user with rights on pods and their streams in
// namespace "streams", a fresh pod on the stand-in node.
func streamsSetup(t *testing.T) (*proxy, string, *kubetest.Node) { return streamsSetupWith(t, nil) }

// streamsSetupWith is streamsSetup with the handler's config tweaked.
func streamsSetupWith(t *testing.T, tweak func(*impersonate.Config)) (*proxy, string, *kubetest.Node) {
	p := newProxy(t, tweak)
	ctx := testContext(t)
	node := nodes[p.w.env]
	if node == nil {
		var err error
		node, err = p.w.env.StartNode(ctx, "stand-in")
		require.NoError(t, err)
		require.NoError(t, p.w.env.Grant(ctx, "erin-streams", []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "configmaps"}, Verbs: []string{"get", "list", "watch", "create"}},
			{APIGroups: []string{""}, Resources: []string{"pods/exec", "pods/attach", "pods/portforward"}, Verbs: []string{"get", "create"}},
			{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
		}, kubetest.User("erin@contoso.com")))
		nodes[p.w.env] = node
	}
	pod := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	_, err := node.CreatePod(ctx, "streams", pod)
	require.NoError(t, err)
	return p, pod, node
}

var erin = user{"erin@contoso.com", "oid-erin", nil}

// erinKubectl waits until RBAC has learnt Erin's grant, then returns her
// kubectl.
func erinKubectl(t *testing.T, p *proxy, env ...string) *kubetest.Kubectl {
	k := p.kubectl(t, p.token(t, erin, nil), env...)
	require.Eventually(t, func() bool {
		res, err := k.Run(testContext(t), nil, "get", "pods", "-n", "streams")
		return err == nil && res.ExitCode == 0
	}, 30*time.Second, 100*time.Millisecond)
	return k
}

func TestWatchDeliversEventsAsTheyHappen(t *testing.T) {
	p, _, _ := streamsSetup(t)
	k := erinKubectl(t, p)
	ctx := testContext(t)
	cms := p.w.env.Client().CoreV1().ConfigMaps("streams")
	create := func(name string) {
		_, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"test": "watch"}}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	create("before-watch")
	cmd, err := k.Command(ctx, "get", "configmaps", "-n", "streams", "--watch", "-o", "name", "-l", "test=watch")
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)

	// The first line is the initial list: from here on, kubectl is watching.
	require.True(t, lines.Scan(), "the watch ended: %v", lines.Err())
	assert.Equal(t, "configmap/before-watch", lines.Text())
	create("during-watch")
	require.True(t, lines.Scan(), "the watch ended: %v", lines.Err())
	assert.Equal(t, "configmap/during-watch", lines.Text())
}

func TestExecThroughTheHandler(t *testing.T) {
	p, pod, _ := streamsSetup(t)
	for _, tc := range []struct {
		name string
		env  []string
	}{{"websocket", nil}, {"spdy", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}}} {
		t.Run(tc.name, func(t *testing.T) {
			k := erinKubectl(t, p, tc.env...)
			input := "stdin through the impersonating handler (" + tc.name + ")\n"
			out := k.MustRun(t, testContext(t), strings.NewReader(input), "exec", "-i", "-n", "streams", pod, "--", "cat")
			assert.Equal(t, input, out)
			res, err := k.Run(testContext(t), nil, "exec", "-n", "streams", pod, "--", "exit", "7")
			require.NoError(t, err)
			assert.Equal(t, 7, res.ExitCode)
		})
	}
}

func TestAttachThroughTheHandler(t *testing.T) {
	p, pod, _ := streamsSetup(t)
	out := erinKubectl(t, p).MustRun(t, testContext(t), strings.NewReader("attached via handler\n"), "attach", "-i", "-n", "streams", pod)
	assert.Contains(t, out, "attached via handler\n")
}

func TestPortForwardThroughTheHandler(t *testing.T) {
	p, pod, _ := streamsSetup(t)
	k := erinKubectl(t, p)
	_, _, conn := portForward(t, k, pod)
	msg := "bytes through handler and API server\n"
	_, err := io.WriteString(conn, msg)
	require.NoError(t, err)
	got, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, msg, got)
}

// portForward runs k's port-forward to an echo server's port of pod and
// connects to the local port kubectl opens.
func portForward(t *testing.T, k *kubetest.Kubectl, pod string, args ...string) (*exec.Cmd, *strings.Builder, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	kubetest.Echo(ln)
	target := ln.Addr().(*net.TCPAddr).Port

	cmd, err := k.Command(testContext(t), append([]string{"port-forward", "-n", "streams", "pod/" + pod, ":" + strconv.Itoa(target)}, args...)...)
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	m := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`).FindStringSubmatch(line)
	require.NotNil(t, m, line)
	conn, err := net.Dial("tcp", "127.0.0.1:"+m[1])
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return cmd, stderr, conn
}

func TestLogsFollowThroughTheHandler(t *testing.T) {
	p, pod, n := streamsSetup(t)
	k := erinKubectl(t, p)
	require.NoError(t, n.Log("streams", pod, "line one"))
	cmd, err := k.Command(testContext(t), "logs", "-f", "-n", "streams", pod)
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	require.True(t, lines.Scan())
	assert.Equal(t, "line one", lines.Text())
	require.NoError(t, n.Log("streams", pod, "line two, written while following"))
	require.True(t, lines.Scan())
	assert.Equal(t, "line two, written while following", lines.Text())
}

// bobAsErin gives bob, who may impersonate erin, a kubectl with env set
// (if not empty) and a fresh pod, on a handler that allows nested
// impersonation and checks it again every 100 ms; takeAway deletes bob's
// right.
func bobAsErin(t *testing.T, env string) (k *kubetest.Kubectl, pod string, takeAway func()) {
	p, pod, _ := streamsSetupWith(t, func(c *impersonate.Config) {
		c.AllowNestedImpersonation = true
		c.RecheckNestedEvery = 100 * time.Millisecond
	})
	ctx := testContext(t)
	binding := "bob-may-be-erin-" + pod
	require.NoError(t, p.w.env.Grant(ctx, binding, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"users"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"erin@contoso.com"}},
	}, kubetest.User("bob@contoso.com")))
	var envs []string
	if env != "" {
		envs = []string{env}
	}
	k = p.kubectl(t, p.token(t, bob, nil), envs...)
	require.Eventually(t, func() bool {
		res, err := k.Run(ctx, nil, "get", "pods", "-n", "streams", "--as", "erin@contoso.com")
		return err == nil && res.ExitCode == 0
	}, 30*time.Second, 100*time.Millisecond)
	return k, pod, func() {
		require.NoError(t, p.w.env.Client().RbacV1().ClusterRoleBindings().Delete(ctx, binding, metav1.DeleteOptions{}))
	}
}

// An exec made with nested impersonation ends when its caller may no
// longer impersonate whom it asked for, and says so where kubectl prints
// it: the Status on the exec's error stream, over WebSocket and SPDY,
// while kubectl is still sending (what it sends then is dropped rather
// than failing the copy that carries the last words, and what the API
// server sends after the end, such as its answer to the close, is not
// passed on).
func TestNestedExecEndsInWordsWithTheRight(t *testing.T) {
	for _, mode := range []struct{ name, env string }{{"websocket", ""}, {"spdy", "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}} {
		t.Run(mode.name, func(t *testing.T) {
			ctx := testContext(t)
			k, pod, takeAway := bobAsErin(t, mode.env)

			cmd, err := k.Command(ctx, "exec", "-i", "-n", "streams", pod, "--as", "erin@contoso.com", "--", "cat")
			require.NoError(t, err)
			stdin, err := cmd.StdinPipe()
			require.NoError(t, err)
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			require.NoError(t, cmd.Start())
			lines := bufio.NewReader(stdout)
			io.WriteString(stdin, "first\n")
			got, err := lines.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "first\n", got)
			go func() { // kubectl keeps sending while the session ends
				for {
					if _, err := io.WriteString(stdin, "more\n"); err != nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			go io.Copy(io.Discard, lines)

			takeAway()
			err = cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "kubectl exits non-zero: %s", stderr.String())
			assert.Equal(t, 1, exit.ExitCode())
			assert.Contains(t, stderr.String(), `bob@contoso.com is not allowed to impersonate user "erin@contoso.com" any longer; the session was ended`)
		})
	}
}

// A port-forward made as erin, by bob who may no longer be erin, ends
// with the agent's words on the forwarded connection's error stream,
// which kubectl prints before its own "lost connection to pod".
func TestNestedPortForwardEndsInWordsWithTheRight(t *testing.T) {
	for _, mode := range []struct{ name, env string }{{"websocket", ""}, {"spdy", "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"}} {
		t.Run(mode.name, func(t *testing.T) {
			k, pod, takeAway := bobAsErin(t, mode.env)

			cmd, stderr, conn := portForward(t, k, pod, "--as", "erin@contoso.com")
			fmt.Fprintln(conn, "first")
			got, err := bufio.NewReader(conn).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "first\n", got)

			takeAway()
			err = cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "kubectl exits non-zero: %s", stderr.String())
			assert.Equal(t, 1, exit.ExitCode())
			// klog quotes the words: their quotes come escaped.
			assert.Contains(t, stderr.String(), `clusterconnect: bob@contoso.com is not allowed to impersonate user \"erin@contoso.com\" any longer; the session was ended`)
			assert.True(t, strings.HasSuffix(stderr.String(), "error: lost connection to pod\n"), "%q", stderr.String())
		})
	}
}
