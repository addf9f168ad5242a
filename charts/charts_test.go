// Package charts_test lints and renders the Helm charts with a real helm,
// checks what they render as a cluster admin would read it, and applies
// them to a real kube-apiserver with a server-side dry run under the
// restricted Pod Security profile.
package charts_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// helmVersion is the helm the charts are checked with, built from the Go
// module proxy and cached.
const helmVersion = "v4.3.2"

func TestMain(m *testing.M) { kubetest.Main(m) }

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helm returns the helm binary, building it once into the user cache
// directory (a few minutes the first time).
func helm(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			helmErr = err
			return
		}
		dir := filepath.Join(cache, "clusterconnect", "helm-"+helmVersion)
		helmPath = filepath.Join(dir, "helm")
		if _, err := os.Stat(helmPath); err == nil {
			return
		}
		cmd := exec.Command("go", "install", "helm.sh/helm/v4/cmd/helm@"+helmVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			helmErr = fmt.Errorf("building helm %s: %v\n%s", helmVersion, err, out)
		}
	})
	require.NoError(t, helmErr)
	return helmPath
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// flagsOf is the -h output of one of the binaries.
func flagsOf(t *testing.T, name string) string {
	bin := filepath.Join(t.TempDir(), name)
	_, err := run(t, "go", "build", "-o", bin, "../examples/"+name)
	require.NoError(t, err)
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	return string(out)
}

// The values a user gives at least.
var (
	agentValues = []string{
		"--set", "relay.url=https://relay.example.com", "--set", "clusterID=prod",
		"--set", "credential.value=s3cret", "--set", "issuer.tenants={72f988bf-86f1-41af-91ab-2d7cd011db47}",
		"--set", "issuer.audiences={api://clusterconnect-server}",
	}
	relayValues = []string{
		"--set", "publicURL=https://relay.example.com", "--set", "tls.existingSecret=relay-tls",
		"--set", "config.existingSecret=relay-config", "--set", "issuer.tenants={72f988bf-86f1-41af-91ab-2d7cd011db47}",
		"--set", "issuer.audiences={api://clusterconnect-server}",
	}
	fleetValues = append(append([]string(nil), relayValues...),
		"--set", "groupOverage.mode=graph", "--set", "groupOverage.secret.existingSecret=graph-secret",
		"--set", "fleet.enabled=true", "--set", "fleet.etcd.endpoints={https://etcd-0.etcd:2379}",
		"--set", "fleet.etcd.existingSecret=etcd-client", "--set", "fleet.peerTLS.existingSecret=relay-peer",
		"--set", "agentService.enabled=true", "--set", "agentService.publicURL=https://agents.relay.example.com",
		"--set", "agentService.loadBalancerSourceRanges={203.0.113.0/24}")
)

// decoder reads what the charts render, strictly (a field the API does
// not know is an error): Kubernetes' own kinds and the Prometheus
// Operator's.
var decoder = func() runtime.Decoder {
	sch := runtime.NewScheme()
	if err := scheme.AddToScheme(sch); err != nil {
		panic(err)
	}
	if err := monitoringv1.AddToScheme(sch); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(sch, serializer.EnableStrict).UniversalDeserializer()
}()

// render runs helm template and decodes what it printed.
func render(t *testing.T, chart, namespace string, values ...string) (string, []runtime.Object) {
	t.Helper()
	out, err := run(t, helm(t), append([]string{"template", "cc", "./" + chart, "--namespace", namespace}, values...)...)
	require.NoError(t, err)
	var objs []runtime.Object
	for _, doc := range strings.Split(out, "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		obj, _, err := decoder.Decode([]byte(doc), nil, nil)
		require.NoError(t, err, "%s", doc)
		objs = append(objs, obj)
	}
	return out, objs
}

func find[T runtime.Object](objs []runtime.Object) []T {
	var out []T
	for _, o := range objs {
		if x, ok := o.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

func TestChartsLint(t *testing.T) {
	for chart, values := range map[string][]string{
		"clusterconnect-agent": agentValues, "clusterconnect-relay": fleetValues,
	} {
		out, err := run(t, helm(t), append([]string{"lint", "--strict", "./" + chart}, values...)...)
		require.NoError(t, err)
		assert.Contains(t, out, "0 chart(s) failed")
	}
}

// Missing required values fail with words that say which.
func TestChartsSayWhatIsMissing(t *testing.T) {
	for _, tc := range []struct {
		chart string
		words string
	}{
		{"clusterconnect-agent", "relay.url is required"},
		{"clusterconnect-relay", "publicURL is required"},
	} {
		_, err := run(t, helm(t), "template", "cc", "./"+tc.chart)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.words)
	}
	_, err := run(t, helm(t), append([]string{"template", "cc", "./clusterconnect-relay", "--set", "fleet.enabled=true"}, relayValues...)...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "fleet.etcd.endpoints is required")
	_, err = run(t, helm(t), append([]string{"template", "cc", "./clusterconnect-relay", "--set", "agentService.enabled=true"}, relayValues...)...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "agentService.publicURL is required")
}

var (
	flagArg  = regexp.MustCompile(`^-([a-z0-9-]+)=`)
	flagHelp = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
)

// checkFlags asserts each argument and CLUSTERCONNECT_<BIN>_ variable of
// the container names a flag the binary lists in its -h.
func checkFlags(t *testing.T, c corev1.Container, help, envPrefix string) {
	flags := map[string]bool{}
	for _, m := range flagHelp.FindAllStringSubmatch(help, -1) {
		flags[m[1]] = true
	}
	require.NotEmpty(t, flags)
	for _, a := range c.Args {
		m := flagArg.FindStringSubmatch(a)
		if assert.NotNil(t, m, a) {
			assert.True(t, flags[m[1]], "%q: the binary has no flag -%s", a, m[1])
		}
	}
	for _, e := range c.Env {
		if name, ok := strings.CutPrefix(e.Name, envPrefix); ok {
			f := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
			assert.True(t, flags[f], "%s: the binary has no flag -%s", e.Name, f)
		}
	}
}

// restricted asserts what the restricted Pod Security profile requires,
// and the probes.
func restricted(t *testing.T, spec corev1.PodSpec) {
	sc := spec.SecurityContext
	require.NotNil(t, sc)
	assert.True(t, *sc.RunAsNonRoot)
	assert.EqualValues(t, 65532, *sc.RunAsUser, "the image's numeric user")
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)
	for _, c := range spec.Containers {
		csc := c.SecurityContext
		require.NotNil(t, csc)
		assert.False(t, *csc.AllowPrivilegeEscalation)
		assert.True(t, *csc.ReadOnlyRootFilesystem)
		assert.Equal(t, []corev1.Capability{"ALL"}, csc.Capabilities.Drop)
		assert.Equal(t, "/livez", c.LivenessProbe.HTTPGet.Path)
		assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	}
}

func TestAgentChart(t *testing.T) {
	help := flagsOf(t, "agent")
	for _, nested := range []bool{false, true} {
		t.Run(fmt.Sprintf("nested=%v", nested), func(t *testing.T) {
			_, objs := render(t, "clusterconnect-agent", "clusterconnect", append(agentValues,
				"--set", fmt.Sprintf("nestedImpersonation=%v", nested), "--set", "proxy.httpsProxy=http://proxy:3128",
				"--set", "issuer.popHosts={/subscriptions/0/connectedClusters/prod}",
				"--set", "groupOverage.mode=graph", "--set", "groupOverage.clientID=6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d",
				"--set", "groupOverage.secret.existingSecret=graph-secret")...)
			deps := find[*appsv1.Deployment](objs)
			require.Len(t, deps, 1)
			assert.EqualValues(t, 2, *deps[0].Spec.Replicas)
			spec := deps[0].Spec.Template.Spec
			restricted(t, spec)
			checkFlags(t, spec.Containers[0], help, "CLUSTERCONNECT_AGENT_")
			assert.Contains(t, spec.Containers[0].Env, corev1.EnvVar{Name: "HTTPS_PROXY", Value: "http://proxy:3128"})
			assert.Contains(t, spec.Containers[0].Args, fmt.Sprintf("-allow-nested-impersonation=%v", nested))
			assert.Contains(t, spec.Containers[0].Args, "-pop-host=/subscriptions/0/connectedClusters/prod")
			assert.Contains(t, spec.Containers[0].Args, "-group-overage=graph")
			var secretEnv bool
			for _, e := range spec.Containers[0].Env {
				secretEnv = secretEnv || e.Name == "AZURE_CLIENT_SECRET" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef.Name == "graph-secret"
			}
			assert.True(t, secretEnv, "the Graph secret comes from the Secret, not the values")

			// RBAC: impersonation, and SubjectAccessReviews only with
			// nested impersonation.
			roles := find[*rbacv1.ClusterRole](objs)
			require.Len(t, roles, 1)
			var verbs []string
			for _, r := range roles[0].Rules {
				for _, res := range r.Resources {
					verbs = append(verbs, strings.Join(r.Verbs, ",")+" "+res)
				}
			}
			want := []string{"impersonate users", "impersonate groups", "impersonate uids",
				"impersonate userextras/clusterconnect.io/oid", "impersonate userextras/clusterconnect.io/tid"}
			if nested {
				want = append(want, "create subjectaccessreviews")
			}
			assert.ElementsMatch(t, want, verbs)
			assert.Empty(t, find[*rbacv1.Role](objs))
			require.Len(t, find[*corev1.Secret](objs), 1, "credential.value makes the Secret")
		})
	}
}

func TestRelayChart(t *testing.T) {
	help := flagsOf(t, "relay")
	t.Run("one replica", func(t *testing.T) {
		_, objs := render(t, "clusterconnect-relay", "clusterconnect", relayValues...)
		sts := find[*appsv1.StatefulSet](objs)
		require.Len(t, sts, 1)
		assert.EqualValues(t, 1, *sts[0].Spec.Replicas, "without a fleet, one replica: the directory is in memory")
		c := sts[0].Spec.Template.Spec.Containers[0]
		restricted(t, sts[0].Spec.Template.Spec)
		checkFlags(t, c, help, "CLUSTERCONNECT_RELAY_")
		assert.NotContains(t, strings.Join(c.Args, " "), "-etcd-endpoints")
	})
	t.Run("dashboard", func(t *testing.T) {
		_, objs := render(t, "clusterconnect-relay", "clusterconnect", append(relayValues, "--set", "grafanaDashboard.enabled=true")...)
		cms := find[*corev1.ConfigMap](objs)
		require.Len(t, cms, 1)
		assert.Equal(t, "1", cms[0].Labels["grafana_dashboard"])
		want, err := os.ReadFile("clusterconnect-relay/dashboards/relay.json")
		require.NoError(t, err)
		assert.JSONEq(t, string(want), cms[0].Data["clusterconnect-relay.json"])
	})
	t.Run("fleet", func(t *testing.T) {
		_, objs := render(t, "clusterconnect-relay", "clusterconnect", fleetValues...)
		sts := find[*appsv1.StatefulSet](objs)
		require.Len(t, sts, 1)
		assert.EqualValues(t, 3, *sts[0].Spec.Replicas)
		c := sts[0].Spec.Template.Spec.Containers[0]
		restricted(t, sts[0].Spec.Template.Spec)
		checkFlags(t, c, help, "CLUSTERCONNECT_RELAY_")
		assert.Contains(t, c.Args, "-etcd-endpoints=https://etcd-0.etcd:2379")
		assert.Contains(t, c.Args, "-peer-ca=/etc/relay/peer/ca.crt")
		assert.Contains(t, c.Args, "-group-overage=graph")
		var names []string
		for _, e := range c.Env {
			names = append(names, e.Name)
		}
		assert.Subset(t, names, []string{"AZURE_CLIENT_SECRET", "CLUSTERCONNECT_RELAY_REPLICA_ID", "CLUSTERCONNECT_RELAY_PEER_ADVERTISE"})
	})
	t.Run("agents on a Service of their own", func(t *testing.T) {
		_, objs := render(t, "clusterconnect-relay", "clusterconnect", fleetValues...)
		c := find[*appsv1.StatefulSet](objs)[0].Spec.Template.Spec.Containers[0]
		assert.Contains(t, c.Args, "-agent-listen=:8445")
		assert.Contains(t, c.Args, "-public-url=https://agents.relay.example.com", "agents' assertions name the URL they dial")
		var agents *corev1.Service
		for _, svc := range find[*corev1.Service](objs) {
			if svc.Name == "cc-agents" {
				agents = svc
			}
		}
		require.NotNil(t, agents, "the agents' Service")
		assert.Equal(t, []string{"203.0.113.0/24"}, agents.Spec.LoadBalancerSourceRanges)
		require.Len(t, agents.Spec.Ports, 1)
		port := agents.Spec.Ports[0].TargetPort.StrVal
		var served bool
		for _, p := range c.Ports {
			served = served || (p.Name == port && p.ContainerPort == 8445)
		}
		assert.True(t, served, "the Service's target port %q is the container's -agent-listen port", port)

		_, objs = render(t, "clusterconnect-relay", "clusterconnect", relayValues...)
		c = find[*appsv1.StatefulSet](objs)[0].Spec.Template.Spec.Containers[0]
		assert.NotContains(t, strings.Join(c.Args, " "), "-agent-listen", "off by default: agents share the clients' address")
	})
}

// What the charts render, and the plain manifests, are accepted by a real
// kube-apiserver (server-side dry run) in a namespace that warns on
// anything the restricted Pod Security profile forbids.
func TestManifestsApplyUnderRestrictedPodSecurity(t *testing.T) {
	env := kubetest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := &kubetest.Kubectl{Kubeconfig: env.Kubeconfig}
	ns := func(name string) {
		require.NoError(t, env.EnsureNamespace(ctx, name))
		k.MustRun(t, ctx, nil, "label", "--overwrite", "namespace", name,
			"pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted")
	}
	apply := func(name, manifest, namespace string) {
		t.Run(name, func(t *testing.T) {
			res, err := k.Run(ctx, strings.NewReader(manifest), "apply", "--server-side", "--dry-run=server", "--namespace", namespace, "-f", "-")
			require.NoError(t, err)
			assert.Equal(t, 0, res.ExitCode, "%s", res.Stderr)
			assert.NotContains(t, res.Stderr, "Warning", "the restricted profile finds nothing to warn about")
			assert.NotEmpty(t, res.Stdout)
		})
	}
	ns("clusterconnect")
	ns("cc-fleet")
	agent, _ := render(t, "clusterconnect-agent", "clusterconnect", append(agentValues, "--set", "nestedImpersonation=true")...)
	apply("agent chart", agent, "clusterconnect")
	relay, _ := render(t, "clusterconnect-relay", "cc-fleet", fleetValues...)
	apply("relay chart", relay, "cc-fleet")
	for _, f := range []string{"../examples/agent/deploy.yaml", "../examples/relay/deploy-fleet.yaml"} {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		apply(filepath.Base(f), string(raw), "clusterconnect")
	}
}

// The agent's replicas prefer different nodes unless the values say
// otherwise; a PodDisruptionBudget is made only when there is more than
// one (minAvailable 1 of 1 would block every drain); its metrics port has
// a Service selecting its pods.
func TestAgentChartSpreadsAndIsScraped(t *testing.T) {
	_, objs := render(t, "clusterconnect-agent", "clusterconnect", agentValues...)
	dep := find[*appsv1.Deployment](objs)[0]
	spreadsByHost(t, dep.Spec.Template.Spec, dep.Spec.Selector.MatchLabels)
	require.Len(t, find[*policyv1.PodDisruptionBudget](objs), 1, "two replicas: a PDB")

	svcs := find[*corev1.Service](objs)
	require.Len(t, svcs, 1)
	assert.Equal(t, dep.Spec.Selector.MatchLabels, svcs[0].Spec.Selector)
	require.Len(t, svcs[0].Spec.Ports, 1)
	assert.EqualValues(t, 8081, svcs[0].Spec.Ports[0].Port)
	var named bool
	for _, p := range dep.Spec.Template.Spec.Containers[0].Ports {
		named = named || p.Name == svcs[0].Spec.Ports[0].TargetPort.String() && p.ContainerPort == 8081
	}
	assert.True(t, named, "the Service's target is the container's health port")

	_, objs = render(t, "clusterconnect-agent", "clusterconnect", append(agentValues, "--set", "replicas=1",
		"--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
		"--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists")...)
	assert.Empty(t, find[*policyv1.PodDisruptionBudget](objs), "one replica: no PDB to block drains")
	aff := find[*appsv1.Deployment](objs)[0].Spec.Template.Spec.Affinity
	assert.Nil(t, aff.PodAntiAffinity, "the values' affinity replaces the default")
	assert.NotNil(t, aff.NodeAffinity)
}

// The agent's chart refuses values it does not know, and a relay URL that
// is not https://host[:port], at install rather than with a crash-looping
// pod (values.schema.json).
func TestAgentChartRefusesWhatItDoesNotKnow(t *testing.T) {
	for _, tc := range []struct {
		set, words string
	}{
		{"replica=3", "additional properties 'replica' not allowed"},
		{"relay.url=relay.example.com", "relay.url"},
		{"relay.url=http://relay.example.com", "relay.url"},
		{"replicas=0", "replicas"},
		{"credential.type=password", "credential.type"},
	} {
		refused(t, "clusterconnect-agent", agentValues, tc.set, tc.words)
	}
	_, err := run(t, helm(t), append([]string{"template", "cc", "./clusterconnect-agent"}, append(agentValues, "--set", "relay.url=https://relay.example.com:8443")...)...)
	assert.NoError(t, err, "a host and port")
}

// The charts' default images are the ones ./hack/images.sh builds: both
// charts have one appVersion, it is the tag the script gives when TAG is
// not set, and it is the tag the rendered pods run unless image.tag says
// otherwise.
func TestChartsRunTheImagesTheScriptBuilds(t *testing.T) {
	appVersion := func(chart string) string {
		raw, err := os.ReadFile(filepath.Join(chart, "Chart.yaml"))
		require.NoError(t, err)
		m := regexp.MustCompile(`(?m)^appVersion: *"?([^"\n]+)"?$`).FindStringSubmatch(string(raw))
		require.NotNil(t, m)
		return m[1]
	}
	version := appVersion("clusterconnect-agent")
	assert.Equal(t, version, appVersion("clusterconnect-relay"))
	cmd := exec.Command("../hack/images.sh", "--tag")
	cmd.Env = append(os.Environ(), "TAG=")
	out, err := cmd.Output()
	require.NoError(t, err)
	assert.Equal(t, version, strings.TrimSpace(string(out)), "the script's default tag")

	_, objs := render(t, "clusterconnect-agent", "cc", agentValues...)
	assert.Equal(t, "clusterconnect/agent:"+version, podsOf(t, objs).Spec.Containers[0].Image)
	_, objs = render(t, "clusterconnect-relay", "cc", relayValues...)
	assert.Equal(t, "clusterconnect/relay:"+version, podsOf(t, objs).Spec.Containers[0].Image)
	_, objs = render(t, "clusterconnect-relay", "cc", append(relayValues, "--set", "image.tag=v9.9.9")...)
	assert.Equal(t, "clusterconnect/relay:v9.9.9", podsOf(t, objs).Spec.Containers[0].Image)
}

// A fleet's relay replicas prefer different nodes unless the values say
// otherwise; a lone relay has no such rule.
func TestRelayFleetSpreads(t *testing.T) {
	_, objs := render(t, "clusterconnect-relay", "cc", fleetValues...)
	sts := find[*appsv1.StatefulSet](objs)[0]
	spreadsByHost(t, sts.Spec.Template.Spec, sts.Spec.Selector.MatchLabels)

	_, objs = render(t, "clusterconnect-relay", "cc", append(fleetValues,
		"--set", "topologySpreadConstraints[0].maxSkew=1", "--set", "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
		"--set", "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
		"--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
		"--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists")...)
	spec := find[*appsv1.StatefulSet](objs)[0].Spec.Template.Spec
	assert.Nil(t, spec.Affinity.PodAntiAffinity, "the values' affinity replaces the default")
	require.Len(t, spec.TopologySpreadConstraints, 1)

	_, objs = render(t, "clusterconnect-relay", "cc", relayValues...)
	assert.Nil(t, find[*appsv1.StatefulSet](objs)[0].Spec.Template.Spec.Affinity, "one replica: nothing to spread")
}

// spreadsByHost asserts a pod spec prefers its replicas (the pods
// selector selects) on different nodes.
func spreadsByHost(t *testing.T, spec corev1.PodSpec, selector map[string]string) {
	t.Helper()
	require.NotNil(t, spec.Affinity, "replicas spread by default")
	require.NotNil(t, spec.Affinity.PodAntiAffinity)
	terms := spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
	require.Len(t, terms, 1)
	assert.Equal(t, "kubernetes.io/hostname", terms[0].PodAffinityTerm.TopologyKey)
	assert.Equal(t, selector, terms[0].PodAffinityTerm.LabelSelector.MatchLabels)
}

// refused asserts helm template refuses chart with values and set,
// saying words.
func refused(t *testing.T, chart string, values []string, set, words string) {
	t.Helper()
	_, err := run(t, helm(t), append([]string{"template", "cc", "./" + chart}, append(values, "--set", set)...)...)
	if assert.Error(t, err, set) {
		assert.Contains(t, err.Error(), words, set)
	}
}
