package charts_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
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
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// A pod as a process: what a rendered pod's container would run, run here
// by the binary the image holds, with exactly its arguments and
// environment, and its Secret and ConfigMap volumes written under a
// temporary directory. What differs, and only as a path or an address:
// each mount path becomes that directory's copy, and each container port
// a free loopback port (an argument ":8443" becomes "127.0.0.1:<port>").
type podProcess struct {
	name  string
	ports map[string]string // container port name → the address it is served on here
	probe []*corev1.Probe
	mu    sync.Mutex
	log   strings.Builder
}

// objects are what the pods' volumes and environment may name: the
// rendered ones and those the test stands in for (existing Secrets).
type objects []runtime.Object

func (o objects) data(kind, name string) map[string][]byte {
	for _, obj := range o {
		switch x := obj.(type) {
		case *corev1.Secret:
			if kind == "Secret" && x.Name == name {
				out := map[string][]byte{}
				for k, v := range x.Data {
					out[k] = v
				}
				for k, v := range x.StringData {
					out[k] = []byte(v)
				}
				return out
			}
		case *corev1.ConfigMap:
			if kind == "ConfigMap" && x.Name == name {
				out := map[string][]byte{}
				for k, v := range x.Data {
					out[k] = []byte(v)
				}
				return out
			}
		}
	}
	return nil
}

// runPod starts the first container of pod as a process of bin, with ports
// mapped as given (container port → loopback port) and extra arguments
// after the container's own.
func runPod(t *testing.T, bin string, pod corev1.PodTemplateSpec, objs objects, ports map[int32]int, extra ...string) *podProcess {
	t.Helper()
	c := pod.Spec.Containers[0]
	require.Empty(t, c.Command, "the image's entrypoint runs")
	root := t.TempDir()
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		require.True(t, ok, "mount %s names a volume of the pod", m.Name)
		var data map[string][]byte
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			data, items = objs.data("Secret", v.Secret.SecretName), v.Secret.Items
			require.NotNil(t, data, "Secret %s", v.Secret.SecretName)
		case v.ConfigMap != nil:
			data, items = objs.data("ConfigMap", v.ConfigMap.Name), v.ConfigMap.Items
			require.NotNil(t, data, "ConfigMap %s", v.ConfigMap.Name)
		default:
			t.Fatalf("volume %s: only Secret and ConfigMap volumes are mapped", m.Name)
		}
		dir := filepath.Join(root, m.MountPath)
		require.NoError(t, os.MkdirAll(dir, 0o700))
		if len(items) == 0 {
			for k := range data {
				items = append(items, corev1.KeyToPath{Key: k, Path: k})
			}
		}
		for _, it := range items {
			b, ok := data[it.Key]
			require.True(t, ok, "volume %s: key %s", m.Name, it.Key)
			require.NoError(t, os.WriteFile(filepath.Join(dir, it.Path), b, 0o600))
		}
		mounts[m.MountPath] = dir
	}
	p := &podProcess{name: c.Name, ports: map[string]string{}}
	portArg := map[string]string{}
	for _, cp := range c.Ports {
		free, ok := ports[cp.ContainerPort]
		if !ok {
			free = freePort(t)
		}
		addr := "127.0.0.1:" + strconv.Itoa(free)
		p.ports[cp.Name] = addr
		portArg[":"+strconv.Itoa(int(cp.ContainerPort))] = addr
	}
	args := append([]string(nil), c.Args...)
	for i, a := range args {
		for from, to := range mounts {
			a = strings.ReplaceAll(a, from+"/", to+"/")
		}
		if k, v, ok := strings.Cut(a, "="); ok {
			if addr, ok := portArg[v]; ok {
				a = k + "=" + addr
			}
		}
		args[i] = a
	}
	env := append(kubetest.HomeEnv(), "PATH="+os.Getenv("PATH"))
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			env = append(env, e.Name+"="+string(objs.data("Secret", ref.Name)[ref.Key]))
		default:
			t.Fatalf("env %s: only values and Secret keys are mapped", e.Name)
		}
	}
	for _, probe := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
		if probe != nil {
			p.probe = append(p.probe, probe)
		}
	}

	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		<-done
		if t.Failed() {
			t.Logf("%s's output:\n%s", p.name, p.output())
		}
	})
	return p
}

func (p *podProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// probesPass waits until every HTTP probe the chart declares answers 2xx
// on the port it names, as the kubelet would ask it.
func (p *podProcess) probesPass(t *testing.T) {
	t.Helper()
	require.NotEmpty(t, p.probe, "the chart declares probes")
	for _, probe := range p.probe {
		require.NotNil(t, probe.HTTPGet)
		addr, ok := p.ports[probe.HTTPGet.Port.String()]
		require.True(t, ok, "probe port %s is a port the container declares", probe.HTTPGet.Port.String())
		url := "http://" + addr + probe.HTTPGet.Path
		var last string
		ok = assert.Eventually(t, func() bool {
			resp, err := http.Get(url)
			if err != nil {
				last = err.Error()
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = fmt.Sprintf("%s %s", resp.Status, b)
			return resp.StatusCode/100 == 2
		}, 60*time.Second, 100*time.Millisecond, "%s's probe %s", p.name, url)
		if !ok {
			t.Fatalf("%s: last answer %s", url, last)
		}
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// buildBinary builds one of the example binaries, as the image holds it.
func buildBinary(t *testing.T, name string) string {
	bin := filepath.Join(t.TempDir(), name)
	_, err := run(t, "go", "build", "-o", bin, "../examples/"+name)
	require.NoError(t, err)
	return bin
}

// The charts' pods run as rendered: the relay and the agent binaries,
// started with exactly the arguments, environment and mounted files the
// rendered pods get, pass every probe the charts declare on the ports they
// declare, the agent connects to the relay with the credential its Secret
// holds, and a caller's request goes through both to a real kube-apiserver
// under the RBAC the agent chart grants.
func TestChartsPodsRunAsRendered(t *testing.T) {
	env := kubetest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	issuer, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(issuer.Close)
	ca, err := pki.NewCA("relay CA")
	require.NoError(t, err)
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, leaf.WriteFiles(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")))
	certPEM, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	require.NoError(t, err)
	keyPEM, err := os.ReadFile(filepath.Join(dir, "tls.key"))
	require.NoError(t, err)
	relayBin, agentBin := buildBinary(t, "relay"), buildBinary(t, "agent")

	// The relay, one replica, its public URL on the port its https port
	// is served on here.
	httpsPort := freePort(t)
	publicURL := "https://localhost:" + strconv.Itoa(httpsPort)
	const audience = "api://clusterconnect-server"
	_, relayObjs := render(t, "clusterconnect-relay", "cc",
		"--set", "publicURL="+publicURL, "--set", "tls.existingSecret=relay-tls",
		"--set-json", `config.agents={"clusters":{"c1":{"secret":"s3cret-of-c1"}}}`,
		"--set-json", `config.policy={"clusters":{"c1":{"issuers":["`+issuer.URL+`"]}}}`,
		"--set", "issuer.oidcIssuerURL="+issuer.URL, "--set-file", "issuer.caPEM="+writeTemp(t, issuer.CA.CertPEM()),
		"--set", "issuer.audiences={"+audience+"}")
	tlsSecret := &corev1.Secret{Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM}}
	tlsSecret.Name = "relay-tls"
	relay := runPod(t, relayBin, podsOf(t, relayObjs), append(objects(relayObjs), tlsSecret), map[int32]int{8443: httpsPort})
	relay.probesPass(t)

	// The agent, its service account and RBAC applied to the API server as
	// rendered; Kubernetes would mount that account's token, which here
	// is a kubeconfig holding it (the one argument added).
	_, agentObjs := render(t, "clusterconnect-agent", "cc-agent",
		"--set", "relay.url="+publicURL, "--set-file", "relay.caPEM="+writeTemp(t, ca.CertPEM()),
		"--set", "clusterID=c1", "--set", "credential.value=s3cret-of-c1", "--set", "replicas=1",
		"--set", "issuer.oidcIssuerURL="+issuer.URL, "--set-file", "issuer.caPEM="+writeTemp(t, issuer.CA.CertPEM()),
		"--set", "issuer.audiences={"+audience+"}")
	require.NoError(t, env.EnsureNamespace(ctx, "cc-agent"))
	k := &kubetest.Kubectl{Kubeconfig: env.Kubeconfig}
	var access strings.Builder
	for _, obj := range agentObjs {
		switch obj.(type) {
		case *corev1.ServiceAccount, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *rbacv1.Role, *rbacv1.RoleBinding:
			b, err := json.Marshal(obj)
			require.NoError(t, err)
			access.Write(b)
			access.WriteString("\n")
		}
	}
	k.MustRun(t, ctx, strings.NewReader(access.String()), "apply", "--server-side", "-f", "-")
	pod := podsOf(t, agentObjs)
	token := strings.TrimSpace(k.MustRun(t, ctx, nil, "create", "token", "-n", "cc-agent", pod.Spec.ServiceAccountName))
	kubeconfig := filepath.Join(t.TempDir(), "serviceaccount.kubeconfig")
	require.NoError(t, kubetest.WriteTokenKubeconfig(kubeconfig, env.Host, env.CA.CertPEM(), token))
	agent := runPod(t, agentBin, pod, objects(agentObjs), nil, "-kubeconfig="+kubeconfig)
	agent.probesPass(t)

	// A caller through both, to the API server, as itself.
	require.NoError(t, env.Grant(ctx, "pods-as-rendered-reader", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}},
	}, kubetest.User("alice@example.com")))
	tok, err := issuer.Token(map[string]any{
		"iss": issuer.URL, "aud": audience, "sub": "alice@example.com", "oid": "oid-alice", "upn": "alice@example.com",
		"exp": time.Now().Add(time.Hour).Unix(),
	})
	require.NoError(t, err)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	var status int
	var body string
	if !assert.Eventually(t, func() bool {
		req, _ := http.NewRequest(http.MethodGet, publicURL+"/clusters/c1/api/v1/namespaces/cc-agent", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		status, body = resp.StatusCode, string(b)
		return status == http.StatusOK
	}, 30*time.Second, 200*time.Millisecond) {
		t.Fatalf("through the relay and the agent: last answer %d %s", status, body)
	}
	assert.Contains(t, body, `"name":"cc-agent"`)
	assert.Regexp(t, regexp.MustCompile(`agent connected.*c1|c1.*agent connected`), relay.output(), "the relay saw the agent with the chart's credential")

	// The checks the charts' NOTES print find what they look for in what
	// the pods log.
	for _, tc := range []struct {
		chart string
		pod   *podProcess
		set   []string
	}{
		{"clusterconnect-relay", relay, []string{"--set", "publicURL=" + publicURL, "--set", "tls.existingSecret=relay-tls", "--set", "config.existingSecret=c",
			"--set", "issuer.oidcIssuerURL=" + issuer.URL, "--set", "issuer.audiences={" + audience + "}"}},
		{"clusterconnect-agent", agent, []string{"--set", "relay.url=" + publicURL, "--set", "clusterID=c1", "--set", "credential.value=s",
			"--set", "issuer.oidcIssuerURL=" + issuer.URL, "--set", "issuer.audiences={" + audience + "}"}},
	} {
		out, err := run(t, helm(t), append([]string{"install", "cc", "./" + tc.chart, "--dry-run=client", "--namespace", "cc"}, tc.set...)...)
		require.NoError(t, err)
		_, notes, ok := strings.Cut(out, "NOTES:")
		require.True(t, ok, "%s prints notes", tc.chart)
		greps := regexp.MustCompile(`\| grep "([^"]+)"`).FindAllStringSubmatch(notes, -1)
		require.NotEmpty(t, greps, "%s's notes: %s", tc.chart, notes)
		for _, g := range greps {
			assert.Contains(t, tc.pod.output(), g[1], "%s's notes grep the logs for %q", tc.chart, g[1])
		}
	}
}

func writeTemp(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}
