// Package e2e runs the relay, agent and proxy binaries as separate
// processes against a real kube-apiserver and drives them with the real
// kubectl.
package e2e

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// chains counts the chains made in this process.
var chains atomic.Int32

// basePolicy lets Alice's group reach the cluster.
const basePolicy = `{"clusters":{"e2e":{"groups":["` + aliceGrp + `"]}}}`

const (
	cluster  = "e2e"
	tenant   = "44444444-4444-4444-8444-444444444444"
	audience = "api://clusterconnect-e2e"
	aliceUPN = "alice@contoso.com"
	aliceGrp = "55555555-5555-4555-8555-555555555555"
	ns       = "e2e"
	// popHost is the u claim proof-of-possession tokens name for this
	// cluster, as an Arc cluster's ARM ID.
	popHost = "/subscriptions/0/resourceGroups/e2e/providers/Microsoft.Kubernetes/connectedClusters/e2e"
	// graphApp is the cluster's own app, which relay and agent sign in to
	// Graph as.
	graphApp = "8c9d0e1f-2a3b-4c4d-9e5f-6a7b8c9d0e1f"
)

// chain is the three programs and what they need.
type chain struct {
	t                              *testing.T
	dir, bin                       string
	env                            *kubetest.Env
	relayAddr, relayCert, relayKey string
	relayCA                        string
	issuer                         *oidctest.Issuer
	agentArgs, relayArgs           []string
	relay, agent, proxy            *proc
	kubeconfig, tokenFile          string
	node                           *kubetest.Node
	// A fleet (newChainWith): its replicas and the balancer in front.
	replicas []*replica
	// lb is the agents' way in; client proxies have one of their own,
	// so that a test can tell which replica carries a client's session.
	lb, clientLB *balancer
	// Flags added to every relay, agent and client proxy the chain
	// starts (withFlags).
	relayFlags, agentFlags, proxyFlags []string
	// policy is the access policy the relay starts with; default
	// basePolicy (withPolicy).
	policy string
	// agentPath asks for a darkPath between the agent and the relay
	// (withAgentPath), kept in agentDarkPath.
	agentPath     bool
	agentDarkPath *darkPath
	// proxyPath asks for a darkPath between the client proxy and the
	// relay (withProxyPath), kept in proxyDarkPath.
	proxyPath     bool
	proxyDarkPath *darkPath
}

// withPolicy starts the relay with policy instead of basePolicy.
func withPolicy(policy string) func(*chain) {
	return func(c *chain) { c.policy = policy }
}

// withFlags adds flags to the relay's, the agent's and the client
// proxy's command lines.
func withFlags(relay, agent, proxy []string) func(*chain) {
	return func(c *chain) { c.relayFlags, c.agentFlags, c.proxyFlags = relay, agent, proxy }
}

// restartAgent SIGKILLs the agent and starts it again: a new process,
// which knows none of the old one's sessions.
func (c *chain) restartAgent() {
	c.agent.kill()
	c.agent = c.start("agent", c.agentArgs...)
}

// startProxy starts a client proxy (proxy serve) for Alice, logging to
// logName.log and writing its entry into kubeconfig.
func (c *chain) startProxy(logName, kubeconfig string, extra ...string) *proc {
	relayAddr := c.relayAddr
	if c.clientLB != nil {
		relayAddr = c.clientLB.ln.Addr().String()
	}
	if c.proxyDarkPath != nil {
		relayAddr = c.proxyDarkPath.addr()
	}
	args := []string{"serve", "-relay-url", "https://" + relayAddr, "-relay-ca", c.relayCA, "-cluster-id", cluster,
		"-port", strconv.Itoa(freePort(c.t)), "-token-file", c.tokenFile, "-kubeconfig", kubeconfig}
	args = append(args, c.proxyFlags...)
	return c.startAs(logName, "proxy", append(args, extra...)...)
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (c *chain) start(name string, args ...string) *proc {
	return c.startAs(name, name, args...)
}

// startAs starts a binary whose log is named logName.
func (c *chain) startAs(logName, name string, args ...string) *proc {
	logf, err := os.Create(filepath.Join(c.dir, logName+".log"))
	require.NoError(c.t, err)
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Env = append(os.Environ(), kubetest.HomeEnv()...) // a client proxy's CA, a token cache: not in the user's home
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(c.t, cmd.Start())
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	c.t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (c *chain) logs(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, name+".log"))
	return string(b)
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func writeFile(t *testing.T, path string, data []byte) string {
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path
}

func newChain(t *testing.T, opts ...func(*chain)) *chain { return newChainWith(t, 0, opts...) }

// newChainWith builds the chain; with replicas > 0 the relay is a fleet of
// that many processes on a 3-member etcd, behind a round-robin balancer
// at relayAddr, which agents and client proxies dial.
func newChainWith(t *testing.T, replicas int, opts ...func(*chain)) *chain {
	env := kubetest.Shared(t)
	ctx := context.Background()
	c := &chain{t: t, dir: t.TempDir(), env: env}
	for _, o := range opts {
		o(c)
	}

	// The three programs, built as a user would build them.
	c.bin = filepath.Join(c.dir, "bin")
	build := exec.Command("go", "build", "-o", c.bin+"/", "../relay", "../agent", "../proxy")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	issuer, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(issuer.Close)
	issuerCA := writeFile(t, filepath.Join(c.dir, "issuer-ca.crt"), issuer.CA.CertPEM())
	// Relay and agent resolve groups overage through Graph (the stand-in's),
	// signed in as the cluster's own app.
	issuer.AddApp(oidctest.App{ClientID: graphApp, Tenant: tenant, Secret: "graph-secret", ObjectID: "cluster-app-oid"})
	graphArgs := []string{"-group-overage", "graph", "-graph-endpoint", issuer.GraphURL(), "-graph-resource", oidctest.GraphResource, "-graph-tenant-id", tenant,
		"-graph-client-id", graphApp, "-graph-authority-host", issuer.AuthorityHost(), "-graph-ca", issuerCA,
		"-graph-client-secret-file", writeFile(t, filepath.Join(c.dir, "graph-secret"), []byte("graph-secret\n"))}

	// Chains share one API server: the second and later name what they
	// make apart (the pod web, which every test execs into, is made anew
	// on this chain's node).
	suffix := ""
	if n := chains.Add(1); n > 1 {
		suffix = fmt.Sprintf("-%d", n)
	}
	// The agent's own identity may only impersonate.
	sa, err := env.CreateServiceAccount(ctx, "clusterconnect", "agent"+suffix)
	require.NoError(t, err)
	require.NoError(t, env.Grant(ctx, "e2e-agent"+suffix, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"users", "groups"}, Verbs: []string{"impersonate"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"uids", "userextras/clusterconnect.io/oid", "userextras/clusterconnect.io/tid"}, Verbs: []string{"impersonate"}},
		// For -allow-nested-impersonation, as the agent's chart grants it.
		{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
	}, sa.Subject()))
	// Alice's group may work in the namespace, nothing more.
	require.NoError(t, env.EnsureNamespace(ctx, ns))
	require.NoError(t, env.Grant(ctx, "e2e-alice"+suffix, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "configmaps"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec", "pods/attach", "pods/portforward"}, Verbs: []string{"get", "create"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
	}, kubetest.Group(aliceGrp)))
	c.node, err = env.StartNode(ctx, "e2e-node"+suffix)
	require.NoError(t, err)
	zero := int64(0)
	err = env.Client().CoreV1().Pods(ns).Delete(ctx, "web", metav1.DeleteOptions{GracePeriodSeconds: &zero})
	require.True(t, err == nil || apierrors.IsNotFound(err), "deleting an earlier chain's pod: %v", err)
	_, err = c.node.CreatePod(ctx, ns, "web")
	require.NoError(t, err)

	// Relay with a certificate the test keeps, so a restarted relay is the
	// same relay to the agent.
	ca, err := pki.NewCA("e2e relay CA")
	require.NoError(t, err)
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	require.NoError(t, err)
	c.relayCert, c.relayKey = filepath.Join(c.dir, "relay.crt"), filepath.Join(c.dir, "relay.key")
	require.NoError(t, leaf.WriteFiles(c.relayCert, c.relayKey))
	relayCA := writeFile(t, filepath.Join(c.dir, "relay-ca.crt"), ca.CertPEM())
	c.relayCA, c.issuer = relayCA, issuer
	agents := writeFile(t, filepath.Join(c.dir, "agents.json"), []byte(`{"clusters":{"e2e":{"secret":"e2e-secret"}}}`))
	secret := writeFile(t, filepath.Join(c.dir, "secret"), []byte("e2e-secret\n"))
	c.relayAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// The front door: Alice's group may reach the cluster.
	policy := writeFile(t, filepath.Join(c.dir, "policy.json"), []byte(cmp.Or(c.policy, basePolicy)))
	c.relayArgs = []string{"-listen", c.relayAddr, "-cert", c.relayCert, "-key", c.relayKey, "-agents", agents,
		"-access-policy", policy, "-tenant", tenant, "-audience", audience, "-entra-discovery-base", issuer.URL, "-issuer-ca", issuerCA,
		"-pop-host", popHost}
	c.relayArgs = append(c.relayArgs, graphArgs...)
	c.relayArgs = append(c.relayArgs, c.relayFlags...)
	if replicas > 0 {
		c.startFleet(replicas, ca)
	} else {
		c.relay = c.start("relay", c.relayArgs...)
	}

	agentTo := c.relayAddr
	if c.agentPath {
		c.agentDarkPath = newDarkPath(t, c.relayAddr)
		agentTo = c.agentDarkPath.addr()
	}
	c.agentArgs = []string{
		"-relay-url", "https://" + agentTo, "-cluster-id", cluster, "-secret-file", secret, "-relay-ca", relayCA,
		"-kubeconfig", sa.Kubeconfig, "-tenant", tenant, "-audience", audience,
		"-entra-discovery-base", issuer.URL, "-issuer-ca", issuerCA, "-pop-host", popHost,
		"-health-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
	}
	c.agentArgs = append(c.agentArgs, graphArgs...)
	c.agentArgs = append(c.agentArgs, c.agentFlags...)
	c.agent = c.start("agent", c.agentArgs...)

	token, err := issuer.EntraToken(oidctest.EntraClaims{
		Tenant: tenant, Audience: audience, UPN: aliceUPN, OID: "oid-alice", Groups: []string{aliceGrp}, Expiry: time.Now().Add(2 * time.Hour),
	})
	require.NoError(t, err)
	tokenFile := writeFile(t, filepath.Join(c.dir, "token"), []byte(token))
	c.kubeconfig = filepath.Join(c.dir, "kubeconfig")
	c.tokenFile = tokenFile
	if c.proxyPath {
		c.proxyDarkPath = newDarkPath(t, c.relayAddr)
	}
	c.proxy = c.startProxy("proxy", c.kubeconfig)

	// Direct mode: a second kubeconfig, written by the proxy binary, whose
	// user runs "proxy token".
	direct := exec.Command(filepath.Join(c.bin, "proxy"), "kubeconfig", "-relay-url", "https://"+c.relayAddr, "-relay-ca", relayCA,
		"-cluster-id", cluster, "-token-file", tokenFile, "-kubeconfig", filepath.Join(c.dir, "direct-kubeconfig"))
	out, err = direct.CombinedOutput()
	require.NoError(t, err, "%s", out)

	c.waitWorking(c.kubectl())
	return c
}

func (c *chain) kubectl(env ...string) *kubetest.Kubectl {
	return &kubetest.Kubectl{Kubeconfig: c.kubeconfig, Env: env}
}

func ctx(t *testing.T) context.Context {
	cx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return cx
}

// waitWorking waits until kubectl gets through the whole chain.
func (c *chain) waitWorking(k *kubetest.Kubectl) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last kubetest.Result
	for time.Now().Before(deadline) {
		res, err := k.Run(ctx(c.t), nil, "get", "pods", "-n", ns)
		if err == nil && res.ExitCode == 0 {
			return
		}
		last = res
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatalf("the chain never worked: %s\nrelay: %s\nagent: %s\nproxy: %s", last.Stderr, c.logs("relay"), c.logs("agent"), c.logs("proxy"))
}

func TestEndToEnd(t *testing.T) {
	c := newChain(t, withFlags(nil, []string{"-allow-nested-impersonation"}, nil))
	k := c.kubectl()

	t.Run("whoami is the Entra user", func(t *testing.T) {
		out := k.MustRun(t, ctx(t), nil, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
		assert.Equal(t, aliceUPN+` ["`+aliceGrp+`","system:authenticated"]`, out)
	})

	t.Run("create get delete", func(t *testing.T) {
		k.MustRun(t, ctx(t), nil, "create", "configmap", "made-through-relay", "-n", ns, "--from-literal=a=b")
		out := k.MustRun(t, ctx(t), nil, "get", "configmap", "made-through-relay", "-n", ns, "-o", "jsonpath={.data.a}")
		assert.Equal(t, "b", out)
		k.MustRun(t, ctx(t), nil, "delete", "configmap", "made-through-relay", "-n", ns)
	})

	t.Run("RBAC denies what was not granted", func(t *testing.T) {
		res, err := k.Run(ctx(t), nil, "get", "secrets", "-n", ns)
		require.NoError(t, err)
		assert.NotEqual(t, 0, res.ExitCode)
		assert.Contains(t, res.Stderr, `User "alice@contoso.com" cannot list resource "secrets"`)
	})

	t.Run("watch delivers an event created after it started", func(t *testing.T) {
		k.MustRun(t, ctx(t), nil, "create", "configmap", "w-before", "-n", ns)
		lines, stop := c.follow(t, k, "get", "configmaps", "-n", ns, "--watch", "-o", "name", "--field-selector", "metadata.name!=kube-root-ca.crt")
		defer stop()
		assert.Equal(t, "configmap/w-before", next(t, lines))
		k.MustRun(t, ctx(t), nil, "create", "configmap", "w-after", "-n", ns)
		assert.Equal(t, "configmap/w-after", next(t, lines))
	})

	for _, proto := range []struct{ name, env string }{{"websocket", ""}, {"spdy", "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}} {
		t.Run("exec over "+proto.name, func(t *testing.T) {
			var env []string
			if proto.env != "" {
				env = []string{proto.env}
			}
			in := "stdin across relay and tunnel (" + proto.name + ")\n"
			out := c.kubectl(env...).MustRun(t, ctx(t), strings.NewReader(in), "exec", "-i", "-n", ns, "web", "--", "cat")
			assert.Equal(t, in, out)
		})
	}

	t.Run("port-forward carries bytes", func(t *testing.T) {
		ln := echoListener(t)
		lines, stop := c.follow(t, k, "port-forward", "-n", ns, "pod/web", ":"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		defer stop()
		m := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindStringSubmatch(next(t, lines))
		require.NotNil(t, m)
		conn, err := net.Dial("tcp", "127.0.0.1:"+m[1])
		require.NoError(t, err)
		defer conn.Close()
		fmt.Fprintln(conn, "ping through five hops")
		got, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "ping through five hops\n", got)
	})

	t.Run("logs -f streams", func(t *testing.T) {
		require.NoError(t, c.node.Log(ns, "web", "first line"))
		lines, stop := c.follow(t, k, "logs", "-f", "-n", ns, "web")
		defer stop()
		assert.Equal(t, "first line", next(t, lines))
		require.NoError(t, c.node.Log(ns, "web", "written while following"))
		assert.Equal(t, "written while following", next(t, lines))
	})

	t.Run("direct mode with the exec plugin", func(t *testing.T) {
		direct := &kubetest.Kubectl{Kubeconfig: filepath.Join(c.dir, "direct-kubeconfig")}
		out := direct.MustRun(t, ctx(t), nil, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		assert.Equal(t, aliceUPN, out)
	})

	t.Run("direct mode with proof of possession: a PoP token per request", func(t *testing.T) {
		// The Entra stand-in plays the person at the browser.
		c.issuer.AddApp(oidctest.App{ClientID: "04b07795-8ddb-461a-bbee-02f9e1bf7b46", Tenant: tenant, Public: true})
		approve, stop := context.WithCancel(context.Background())
		defer stop()
		go func() {
			for {
				l, err := c.issuer.NextDeviceLogin(approve)
				if err != nil {
					return
				}
				c.issuer.ApproveDevice(l.UserCode, oidctest.EntraClaims{UPN: aliceUPN, OID: "oid-alice", Groups: []string{aliceGrp}})
			}
		}()
		kc := filepath.Join(c.dir, "pop-kubeconfig")
		out, err := exec.Command(filepath.Join(c.bin, "proxy"), "kubeconfig", "-relay-url", "https://"+c.relayAddr, "-relay-ca", c.relayCA,
			"-cluster-id", cluster, "-kubeconfig", kc, "-login", "devicecode", "-server-id", audience, "-tenant-id", tenant,
			"-authority-host", c.issuer.AuthorityHost(), "-authority-ca", filepath.Join(c.dir, "issuer-ca.crt"),
			"-token-cache-dir", filepath.Join(c.dir, "pop-tokens"), "-pop-host", popHost).CombinedOutput()
		require.NoError(t, err, "%s", out)
		pop := &kubetest.Kubectl{Kubeconfig: kc}
		// Discovery and the list are several requests: kubectl runs the
		// plugin for each, and relay and agent each take every PoP token once.
		pop.MustRun(t, ctx(t), nil, "get", "pods", "-n", ns, "--cache-dir", t.TempDir())
		who := pop.MustRun(t, ctx(t), nil, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		assert.Equal(t, aliceUPN, who)
	})

	t.Run("a user in too many groups for a token: Graph says which, at the relay and the agent", func(t *testing.T) {
		c.issuer.SetMemberGroups("oid-olivia", []string{"66666666-6666-4666-8666-666666666666", aliceGrp})
		tok, err := c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: "olivia@contoso.com",
			OID: "oid-olivia", GroupsOverage: true, Expiry: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		k := c.caller(t, cluster, tok)
		defer func() {
			if t.Failed() {
				t.Logf("relay: %s\nagent: %s", c.logs("relay"), c.logs("agent"))
			}
		}()
		groups := k.MustRun(t, ctx(t), nil, "auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}")
		assert.Contains(t, groups, aliceGrp)
		k.MustRun(t, ctx(t), nil, "get", "pods", "-n", ns)

		// Graph down: the relay refuses the caller rather than guess.
		c.issuer.FailGraph(http.StatusServiceUnavailable)
		defer c.issuer.FailGraph(0)
		tok, err = c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: "oscar@contoso.com",
			OID: "oid-oscar", GroupsOverage: true, Expiry: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		res, err := c.caller(t, cluster, tok).Run(ctx(t), nil, "get", "pods", "-n", ns)
		require.NoError(t, err)
		assert.NotEqual(t, 0, res.ExitCode)
		assert.Contains(t, res.Stderr, "Forbidden")
	})

	t.Run("front door", func(t *testing.T) { frontDoor(t, c) })

	t.Run("one of two agents killed under 200 clients: no request fails", func(t *testing.T) { agentKilledUnderLoad(t, c) })

	t.Run("agent killed mid-watch, then restarted: the watch goes on", func(t *testing.T) {
		// Something to list, so that kubectl prints a line before it watches.
		k.MustRun(t, ctx(t), nil, "create", "configmap", "present-before-the-watch", "-n", ns)
		cmd, err := k.Command(ctx(t), "get", "configmaps", "-n", ns, "--watch")
		require.NoError(t, err)
		stdout, _ := cmd.StdoutPipe()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		exited := make(chan struct{})
		lines := make(chan string, 100)
		go func() {
			defer close(exited)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			cmd.Wait()
		}()
		defer func() { cmd.Process.Kill(); <-exited }()
		waitLine := func(word string) {
			t.Helper()
			for {
				select {
				case l := <-lines:
					assert.NotContains(t, l, "ServiceUnavailable", "the watch did not end")
					if strings.Contains(l, word) {
						return
					}
				case <-exited:
					t.Fatalf("kubectl exited before printing %q: stderr %q\nrelay: %s", word, stderr.String(), lastLines(c.logs("relay"), 15))
				case <-ctx(t).Done():
					t.Fatalf("kubectl never printed %q", word)
				}
			}
		}
		// An event proves the watch itself is established before the agent
		// goes: kubectl prints the list before it starts watching, and
		// what is made after the list comes as an event.
		waitLine("present-before-the-watch")
		k.MustRun(t, ctx(t), nil, "create", "configmap", "before-the-kill", "-n", ns)
		waitLine("before-the-kill")

		c.agent.kill()
		// Another kubectl, with nothing cached, is told at once what is
		// wrong: no ten retries of a 503, no generic words.
		start := time.Now()
		res, err := k.Run(ctx(t), nil, "--cache-dir", t.TempDir(), "get", "pods", "-n", ns)
		require.NoError(t, err)
		assert.NotEqual(t, 0, res.ExitCode)
		assert.Contains(t, res.Stderr, `cluster \"e2e\" is not connected to the relay: check that its agent is running and can reach the relay`)
		t.Logf("kubectl with an empty discovery cache reported the disconnected cluster after %v", time.Since(start).Round(time.Millisecond))

		// The agent comes back within the watch's window: the relay
		// resumes the watch from where kubectl is, and kubectl, still
		// running, prints what changed meanwhile and after, with nothing
		// in between.
		c.agent = c.start("agent", c.agentArgs...)
		c.waitWorking(k)
		k.MustRun(t, ctx(t), nil, "create", "configmap", "after-the-restart", "-n", ns)
		waitLine("after-the-restart")
		select {
		case <-exited:
			t.Fatalf("kubectl's watch ended: stderr %q", stderr.String())
		default:
		}
	})

	t.Run("relay killed under exec and port-forward, through the client proxy: both go on", func(t *testing.T) { sessionsAcrossRelayRestart(t, c) })

	t.Run("access revoked: alice's watches, execs and port-forwards end within 2 s, bob's go on", func(t *testing.T) { accessRevoked(t, c) })

	t.Run("nested impersonation taken away: execs as erin end saying why", func(t *testing.T) { nestedTakenAway(t, c) })

	t.Run("cluster removed from the agents file: its sessions end saying so", func(t *testing.T) { clusterRemoved(t, c) })

	t.Run("sessionExpiry end: a watch and an exec opened with a token that expires in 20 s end then, saying so", func(t *testing.T) { expiryEnds(t, c) })

	t.Run("sessionExpiry renew: the client proxy keeps a watch and an exec for three token lifetimes, until it presents bob's token", func(t *testing.T) {
		renewedThroughTheProxy(t, c)
	})

	t.Run("exec whose agent is gone for good: kubectl says why and exits 1", func(t *testing.T) { sessionLostForGood(t, c) })

	t.Run("port-forward whose agent is gone for good: kubectl says so and exits 1", func(t *testing.T) { portForwardLostForGood(t, c) })

	t.Run("relay restarted: the agent reconnects by itself", func(t *testing.T) {
		c.relay.kill()
		c.relay = c.start("relay", c.relayArgs...)
		c.waitWorking(k)
		out := k.MustRun(t, ctx(t), nil, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		assert.Equal(t, aliceUPN, out)
	})

	// Last: the relay's certificate is from another CA afterwards, which
	// the direct kubeconfig written at the start does not trust.
	t.Run("the relay's certificate and CA rotate under load: nothing fails, the agent stays connected", func(t *testing.T) { certificatesRotate(t, c) })
}

// caller is kubectl talking to the relay directly with a bearer token, on
// a cluster route, with nothing cached.
func (c *chain) caller(t *testing.T, cluster, token string) *kubetest.Kubectl {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://%s/clusters/%s", certificate-authority: %q}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, c.relayAddr, cluster, c.relayCA, token)
	path := writeFile(t, filepath.Join(t.TempDir(), "kubeconfig"), []byte(kc))
	return &kubetest.Kubectl{Kubeconfig: path}
}

// frontDoor drives the relay's front door with the real kubectl: who is
// let through, what the others read, and that an unknown cluster and a
// forbidden one cannot be told apart.
func frontDoor(t *testing.T, c *chain) {
	run := func(k *kubetest.Kubectl, args ...string) kubetest.Result {
		res, err := k.Run(ctx(t), nil, append([]string{"--cache-dir", t.TempDir()}, args...)...)
		require.NoError(t, err)
		return res
	}
	alice, err := c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: aliceUPN, OID: "oid-alice", Groups: []string{aliceGrp}})
	require.NoError(t, err)
	mallory, err := c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: "mallory@contoso.com", OID: "oid-mallory"})
	require.NoError(t, err)

	t.Run("a member of the allowed group gets through, directly", func(t *testing.T) {
		res := run(c.caller(t, cluster, alice), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		assert.Equal(t, 0, res.ExitCode, res.Stderr)
		assert.Equal(t, aliceUPN, res.Stdout)
	})

	t.Run("a signed-in stranger reads the same words for a real cluster and an unknown one", func(t *testing.T) {
		real := run(c.caller(t, cluster, mallory), "get", "pods", "-n", ns)
		unknown := run(c.caller(t, "no-such-cluster", mallory), "get", "pods", "-n", ns)
		assert.NotEqual(t, 0, real.ExitCode)
		assert.Contains(t, real.Stderr, "the relay does not let this caller reach that cluster, or there is no such cluster")
		klog := regexp.MustCompile(`(?m)^E\d{4} [\d:.]+ +\d+ `) // time and process ID
		assert.Equal(t, klog.ReplaceAllString(real.Stderr, ""), klog.ReplaceAllString(unknown.Stderr, ""))
		assert.NotContains(t, c.logs("agent"), "mallory", "the refused caller never reached the cluster")
	})

	t.Run("without a token, or with a bad one, kubectl is told to log in", func(t *testing.T) {
		res := run(c.caller(t, cluster, "not-a-token"), "get", "pods", "-n", ns)
		assert.NotEqual(t, 0, res.ExitCode)
		assert.Contains(t, res.Stderr, "You must be logged in to the server")
	})

	t.Run("refused with an empty discovery cache: kubectl says why, once", func(t *testing.T) { refusedWithAnEmptyCache(t, c) })

	t.Run("discovery: which clusters alice may reach, a context for each", func(t *testing.T) { discovery(t, c) })

	t.Run("step-up: an exec and a write ask for a stronger sign-in", func(t *testing.T) { stepUp(t, c) })

	t.Run("the policy file is re-read: Mallory's group is added", func(t *testing.T) {
		writeFile(t, filepath.Join(c.dir, "policy.json"), []byte(`{"clusters":{"e2e":{"groups":["`+aliceGrp+`"],"users":["oid-mallory"]}}}`))
		require.Eventually(t, func() bool {
			return run(c.caller(t, cluster, mallory), "auth", "whoami").ExitCode == 0
		}, 30*time.Second, 500*time.Millisecond, "relay log: %s", c.logs("relay"))
		assert.Contains(t, c.logs("relay"), "access policy applied")
		c.setPolicy(t, basePolicy)
	})

	t.Run("a caller at its stream limit waits, then is told why; another is served", func(t *testing.T) {
		c.setPolicy(t, `{"clusters":{"e2e":{"groups":["`+aliceGrp+`"],"limits":{"callerStreams":1}}}}`)
		t.Cleanup(func() { c.setPolicy(t, basePolicy) })
		bob, err := c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: "bob@contoso.com", OID: "oid-bob", Groups: []string{aliceGrp}})
		require.NoError(t, err)
		ak, bk := c.caller(t, cluster, alice), c.caller(t, cluster, bob)

		// Alice's watch takes her one stream; an event Bob causes shows it
		// is open. Her kubectl keeps a discovery cache, as kubectl does by
		// default: with none, a 429 on discovery reads only as kubectl's
		// generic "the server has received too many requests".
		cache := t.TempDir()
		lines, stop := c.follow(t, ak, "--cache-dir", cache, "get", "configmaps", "-n", ns, "--watch", "-o", "name")
		defer stop()
		bk.MustRun(t, ctx(t), nil, "create", "configmap", "limit-probe", "-n", ns)
		defer bk.Run(ctx(t), nil, "delete", "configmap", "limit-probe", "-n", ns)
		for next(t, lines) != "configmap/limit-probe" {
		}

		// Bob is another caller: served at once.
		res := run(bk, "get", "pods", "-n", ns, "-o", "name")
		assert.Equal(t, 0, res.ExitCode, res.Stderr)
		// Alice's second request is refused with 429 and Retry-After;
		// kubectl retries it, and says why when it gives up.
		res, err = ak.Run(ctx(t), nil, "--cache-dir", cache, "get", "pods", "-n", ns, "-o", "name")
		require.NoError(t, err)
		assert.NotEqual(t, 0, res.ExitCode)
		assert.Contains(t, res.Stderr, "Error from server (TooManyRequests): this caller has 1 requests open to the cluster, the most one caller may have")
		t.Logf("kubectl gave up on the limit with: %s", strings.TrimSpace(res.Stderr))

		// While kubectl is retrying, her watch ends: the retry gets in.
		// (-v=6 logs each response's status.)
		cmd, err := ak.Command(ctx(t), "--cache-dir", cache, "-v=6", "get", "pods", "-n", ns, "-o", "name")
		require.NoError(t, err)
		var out strings.Builder
		cmd.Stdout = &out
		stderr, err := cmd.StderrPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		refused := make(chan struct{})
		go func() {
			s := bufio.NewScanner(stderr)
			seen := false
			for s.Scan() {
				if !seen && strings.Contains(s.Text(), " 429 Too Many Requests") {
					seen = true
					close(refused)
				}
			}
		}()
		select {
		case <-refused:
		case <-time.After(time.Minute):
			t.Fatal("kubectl was never refused with 429")
		}
		stop()
		require.NoError(t, cmd.Wait(), "kubectl's retry got through once the watch ended")
		assert.Equal(t, "pod/web", strings.TrimSpace(out.String()))
	})
}

// setPolicy writes the relay's access policy file and waits until the
// relay has applied it.
func (c *chain) setPolicy(t *testing.T, policy string) {
	t.Helper()
	before := strings.Count(c.logs("relay"), "access policy applied")
	writeFile(t, filepath.Join(c.dir, "policy.json"), []byte(policy))
	require.Eventually(t, func() bool { return strings.Count(c.logs("relay"), "access policy applied") > before },
		30*time.Second, 100*time.Millisecond, "relay log: %s", c.logs("relay"))
}

// startSecondAgent starts a second agent replica for the cluster, logging
// to agent-2.log, and waits until both its connections are open.
func (c *chain) startSecondAgent(t *testing.T) *proc {
	args := append([]string(nil), c.agentArgs...)
	for i, a := range args {
		if a == "-health-listen" {
			args[i+1] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		}
	}
	second := c.startAs("agent-2", "agent", args...) // a new log
	require.Eventually(t, func() bool { return strings.Count(c.logs("agent-2"), "tunnel connection open") >= 2 },
		time.Minute, 100*time.Millisecond, "agent-2 log: %s", c.logs("agent-2"))
	return second
}

// agentKilledUnderLoad starts a second agent for the cluster, has 200
// clients send GETs through the relay, SIGKILLs the second agent halfway
// and counts the requests that failed.
func agentKilledUnderLoad(t *testing.T, c *chain) {
	c.setPolicy(t, `{"clusters":{"e2e":{"groups":["`+aliceGrp+`"],"limits":{"callerStreams":1000,"callerRate":1e6,"callerBurst":1000000,"clusterRate":1e6,"clusterBurst":1000000}}}}`)
	t.Cleanup(func() { c.setPolicy(t, basePolicy) })
	second := c.startSecondAgent(t)

	token, err := c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: aliceUPN, OID: "oid-alice", Groups: []string{aliceGrp}})
	require.NoError(t, err)
	caPEM, err := os.ReadFile(c.relayCA)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	url := "https://" + c.relayAddr + "/clusters/" + cluster + "/api/v1/namespaces/" + ns + "/pods/web"

	var (
		sent, failed, afterKill atomic.Int64
		killed                  atomic.Bool
		mu                      sync.Mutex
		failures                []string
	)
	get := func() {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		sent.Add(1)
		if killed.Load() {
			afterKill.Add(1)
		}
		if err == nil {
			var body []byte
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s: %.300s", resp.Status, body)
			}
		}
		if err != nil {
			failed.Add(1)
			mu.Lock()
			failures = append(failures, err.Error())
			mu.Unlock()
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					get()
				}
			}
		}()
	}
	time.Sleep(3 * time.Second)
	before := sent.Load()
	second.kill()
	killed.Store(true)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("200 clients sent %d GETs, %d before and %d after agent-2 was SIGKILLed; %d failed", sent.Load(), before, afterKill.Load(), failed.Load())
	assert.Zero(t, failed.Load(), "failures: %v", failures[:min(len(failures), 5)])
	assert.Positive(t, before, "requests went through before the kill")
	assert.Contains(t, c.logs("agent-2"), "path=/api/v1/namespaces/"+ns+"/pods/web", "agent-2 carried some before it was killed")
	assert.Positive(t, afterKill.Load(), "requests went through after the kill")
}

// follow starts a long-running kubectl and returns its output lines.
func (c *chain) follow(t *testing.T, k *kubetest.Kubectl, args ...string) (*bufio.Scanner, func()) {
	cmd, err := k.Command(ctx(t), args...)
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	return bufio.NewScanner(stdout), func() { cmd.Process.Kill(); cmd.Wait() }
}

// lastLines is the end of a log.
func lastLines(log string, n int) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

func next(t *testing.T, s *bufio.Scanner) string {
	t.Helper()
	require.True(t, s.Scan(), "the stream ended: %v", s.Err())
	return s.Text()
}
