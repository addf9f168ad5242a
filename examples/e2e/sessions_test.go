package e2e

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sessionBytes is what crosses a relay restart in the tests below.
const sessionBytes = 64 << 20

// after runs fault once n bytes have been counted, and reports when it
// has run.
func after(counted <-chan int, n int, fault func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		total := 0
		for k := range counted {
			if total += k; total >= n {
				break
			}
		}
		fault()
	}()
	return done
}

// restartRelay SIGKILLs the relay and starts it again.
func (c *chain) restartRelay() {
	c.relay.kill()
	c.relay = c.start("relay", c.relayArgs...)
}

// execAcross feeds 64 MiB to kubectl exec -i … sha256sum, running fault
// a quarter of the way: the sum comes back right, and kubectl exits 0.
func execAcross(t *testing.T, c *chain, k *kubetest.Kubectl, fault func()) {
	data := make([]byte, sessionBytes)
	rand.NewChaCha8([32]byte{1}).Read(data)
	want := fmt.Sprintf("%x  -\n", sha256.Sum256(data))

	cmd, err := k.Command(ctx(t), "exec", "-i", "-n", ns, "web", "--", "sha256sum")
	require.NoError(t, err)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Start())
	counted := make(chan int, 1024)
	faulted := after(counted, sessionBytes/4, fault)
	start := time.Now()
	for b := data; len(b) > 0; {
		n := min(len(b), 256<<10)
		_, err := stdin.Write(b[:n])
		require.NoError(t, err, "kubectl stopped reading")
		b = b[n:]
		select {
		case counted <- n:
		default:
		}
	}
	close(counted)
	stdin.Close()
	<-faulted
	err = cmd.Wait()
	t.Logf("64 MiB through exec across the fault in %v", time.Since(start).Round(time.Millisecond))
	require.NoError(t, err, "kubectl exec failed: %s\nproxy: %s", stderr.String(), lastLines(c.logs("proxy"), 20))
	assert.Equal(t, want, stdout.String())
	assert.Empty(t, withoutStreamRace(stderr.String()))
}

// kubectlStreamRace is the line kubectl before 1.34 prints when the
// API server's first message of an exec, an empty one on stdout that
// says the streams are up, arrives before kubectl has made its streams:
// kubectl reads the connection before it makes them (client-go v0.33 and
// older) and drops the message. It is kubectl's, with or without a relay,
// and loses nothing: the message is empty by the protocol.
var kubectlStreamRace = regexp.MustCompile(`(?m)^E\d{4} [\d:.]+ +\d+ websocket\.go:\d+\] Unknown stream id 1, discarding message\n`)

// withoutStreamRace is stderr without kubectl's own race line.
func withoutStreamRace(stderr string) string {
	return kubectlStreamRace.ReplaceAllString(stderr, "")
}

// sessionsAcrossRelayRestart: in proxy mode an exec and a port-forward
// carry 64 MiB each while the relay is SIGKILLed and started again; the
// client proxy re-attaches their sessions, and kubectl sees nothing. Two
// agent replicas serve the cluster: a session re-attaches to the one it
// lives in.
func sessionsAcrossRelayRestart(t *testing.T, c *chain) {
	k := c.kubectl()
	second := c.startSecondAgent(t)
	defer second.kill()
	t.Run("exec -i: 64 MiB into sha256sum", func(t *testing.T) { execAcross(t, c, k, c.restartRelay) })

	t.Run("port-forward: a 64 MiB download", func(t *testing.T) { portForwardAcross(t, c, k, c.restartRelay) })
	c.waitWorking(k)
}

// countTo is a writer that tells counted how much went through it.
type countTo chan<- int

func (c countTo) Write(p []byte) (int, error) {
	select {
	case c <- len(p):
	default:
	}
	return len(p), nil
}

// sessionLostForGood: the agent replica an exec lives in is SIGKILLed, so
// its session cannot be re-attached; when the client proxy's grace
// period is over, kubectl says why and exits 1, over WebSocket and SPDY
// alike (without the words, SPDY exits 0 as if the command had run). In
// direct mode the relay says it at once.
func sessionLostForGood(t *testing.T, c *chain) {
	kc := filepath.Join(c.dir, "short-grace-kubeconfig")
	short := c.startProxy("proxy-short-grace", kc, "-session-grace", "2s")
	defer short.kill()
	c.waitWorking(&kubetest.Kubectl{Kubeconfig: kc})
	for _, tc := range []struct{ name, kubeconfig, env string }{
		{"websocket through the client proxy", kc, ""},
		{"spdy through the client proxy", kc, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"},
		{"websocket in direct mode", filepath.Join(c.dir, "direct-kubeconfig"), ""},
		{"spdy in direct mode", filepath.Join(c.dir, "direct-kubeconfig"), "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &kubetest.Kubectl{Kubeconfig: tc.kubeconfig, Env: []string{tc.env}}
			x := runKubectl(t, k, "exec", "-i", "-n", ns, "web", "--", "cat")
			fmt.Fprintln(x.stdin, "before the agent goes")
			x.line(t, "before the agent goes")

			c.restartAgent()
			code := x.ended(t, time.Minute)
			assert.Equal(t, 1, code, "stderr %q", x.stderr.String())
			assert.Contains(t, x.stderr.String(), "error: clusterconnect: the connection to the cluster was lost and could not be resumed")
			assert.Contains(t, x.stderr.String(), "the command may have finished or may still be running")
			t.Logf("kubectl, %s: exit %d, stderr %q", tc.name, code, x.stderr.String())
			c.waitWorking(k)
		})
	}
}

// portForwardAcross downloads 64 MiB through kubectl port-forward,
// running fault a quarter of the way: every byte arrives, in order, and
// kubectl is still running.
func portForwardAcross(t *testing.T, c *chain, k *kubetest.Kubectl, fault func()) {
	data := make([]byte, sessionBytes)
	rand.NewChaCha8([32]byte{2}).Read(data)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer conn.Close(); conn.Write(data) }()
		}
	}()
	cmd, stderr, conn := portForward(t, k, ln)
	defer conn.Close()
	counted := make(chan int, 1024)
	restarted := after(counted, sessionBytes/4, fault)
	h := sha256.New()
	got, err := io.Copy(io.MultiWriter(h, countTo(counted)), conn)
	close(counted)
	<-restarted
	require.NoError(t, err)
	assert.Equal(t, int64(sessionBytes), got, "kubectl: %s\nproxy: %s", stderr.String(), lastLines(c.logs("proxy"), 20))
	assert.Equal(t, sha256.Sum256(data), [32]byte(h.Sum(nil)))
	assert.Nil(t, cmd.ProcessState, "kubectl port-forward is still running")
	assert.NotContains(t, stderr.String(), "error")
}

// portForwardLostForGood: the agent replica a port-forward lives in is
// SIGKILLed; kubectl, through the client proxy once its grace period is
// over and at once in direct mode, prints why for the connection it
// forwards, then its own "lost connection to pod", and exits 1, over
// WebSocket and SPDY.
func portForwardLostForGood(t *testing.T, c *chain) {
	kc := filepath.Join(c.dir, "short-grace-pf-kubeconfig")
	short := c.startProxy("proxy-short-grace-pf", kc, "-session-grace", "2s")
	defer short.kill()
	c.waitWorking(&kubetest.Kubectl{Kubeconfig: kc})
	ln := echoListener(t)
	for _, tc := range []struct{ name, kubeconfig, env string }{
		{"websocket through the client proxy", kc, ""},
		{"spdy through the client proxy", kc, "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"},
		{"websocket in direct mode", filepath.Join(c.dir, "direct-kubeconfig"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &kubetest.Kubectl{Kubeconfig: tc.kubeconfig, Env: []string{tc.env}}
			cmd, stderr, conn := portForward(t, k, ln)
			defer conn.Close()
			fmt.Fprintln(conn, "before the agent goes")
			got, err := bufio.NewReader(conn).ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "before the agent goes\n", got)

			c.restartAgent()
			err = cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "kubectl exited 0: stderr %q", stderr.String())
			assert.Equal(t, 1, exit.ExitCode())
			// The words on the forwarded connection's error stream, which
			// kubectl prints before its own.
			assert.Contains(t, stderr.String(), "clusterconnect: the connection to the cluster was lost and could not be resumed")
			assert.True(t, strings.HasSuffix(stderr.String(), "error: lost connection to pod\n"), "%q", stderr.String())
			t.Logf("kubectl printed %q", stderr.String())
			c.waitWorking(k)
		})
	}
}

// portForward runs kubectl port-forward to the pod web's port where ln
// listens and connects to the local port it opens. kubectl is stopped
// when the test ends; its stderr may be read while it runs.
func portForward(t *testing.T, k *kubetest.Kubectl, ln net.Listener) (*exec.Cmd, *lockedBuffer, net.Conn) {
	cmd, err := k.Command(ctx(t), "port-forward", "-n", ns, "pod/web", ":"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	require.True(t, lines.Scan(), "port-forward printed nothing: %s", stderr.String())
	m := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindStringSubmatch(lines.Text())
	require.NotNil(t, m)
	conn, err := net.Dial("tcp", "127.0.0.1:"+m[1])
	require.NoError(t, err)
	return cmd, stderr, conn
}

// echoListener listens on loopback, echoing what each connection sends,
// until the test ends: a pod's port for port-forwards.
func echoListener(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	kubetest.Echo(ln)
	return ln
}
