package charts_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// podsOf is the pod template of a chart's workload.
func podsOf(t *testing.T, objs []runtime.Object) corev1.PodTemplateSpec {
	if d := find[*appsv1.Deployment](objs); len(d) == 1 {
		return d[0].Spec.Template
	}
	s := find[*appsv1.StatefulSet](objs)
	require.Len(t, s, 1)
	return s[0].Spec.Template
}

func hasPort(c corev1.Container, name string) bool {
	for _, p := range c.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

// With the Prometheus Operator's objects asked for, each chart renders a
// ServiceMonitor that finds its metrics port through a Service selecting
// its pods, a PodMonitor that finds it on the pods, and a PrometheusRule
// holding exactly the rules promtool tests (TestAlertRules), all valid
// for the operator's API and carrying the labels given for its selectors.
func TestChartsMonitorAndAlertOnRequest(t *testing.T) {
	for _, tc := range []struct {
		chart, port, rules string
		values             []string
	}{
		{"clusterconnect-agent", "health", "alerts/agent-rules.yaml", agentValues},
		{"clusterconnect-relay", "metrics", "alerts/relay-rules.yaml", fleetValues},
	} {
		t.Run(tc.chart, func(t *testing.T) {
			_, objs := render(t, tc.chart, "cc", tc.values...)
			assert.Empty(t, find[*monitoringv1.ServiceMonitor](objs), "opt-in: they need the operator's CRDs")
			assert.Empty(t, find[*monitoringv1.PrometheusRule](objs))

			_, objs = render(t, tc.chart, "cc", append(tc.values,
				"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=kps",
				"--set", "metrics.podMonitor.enabled=true", "--set", "metrics.podMonitor.interval=15s",
				"--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.prometheusRule.labels.release=kps")...)
			pods := podsOf(t, objs)
			require.True(t, hasPort(pods.Spec.Containers[0], tc.port))

			sms := find[*monitoringv1.ServiceMonitor](objs)
			require.Len(t, sms, 1)
			assert.Equal(t, "kps", sms[0].Labels["release"])
			require.Len(t, sms[0].Spec.Endpoints, 1)
			assert.Equal(t, tc.port, sms[0].Spec.Endpoints[0].Port)
			assert.Equal(t, "/metrics", sms[0].Spec.Endpoints[0].Path)
			sel, err := metav1LabelSelector(sms[0].Spec.Selector.MatchLabels)
			require.NoError(t, err)
			var scraped int
			for _, svc := range find[*corev1.Service](objs) {
				if !sel.Matches(labels.Set(svc.Labels)) {
					continue
				}
				for _, p := range svc.Spec.Ports {
					if p.Name == tc.port {
						scraped++
						assert.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pods.Labels)), "the Service %s selects the pods", svc.Name)
						assert.Equal(t, tc.port, p.TargetPort.String())
					}
				}
			}
			assert.Equal(t, 1, scraped, "one Service has the metrics port the ServiceMonitor scrapes")

			pms := find[*monitoringv1.PodMonitor](objs)
			require.Len(t, pms, 1)
			require.Len(t, pms[0].Spec.PodMetricsEndpoints, 1)
			assert.Equal(t, tc.port, *pms[0].Spec.PodMetricsEndpoints[0].Port)
			assert.EqualValues(t, "15s", pms[0].Spec.PodMetricsEndpoints[0].Interval)
			assert.True(t, labels.SelectorFromSet(pms[0].Spec.Selector.MatchLabels).Matches(labels.Set(pods.Labels)))

			prs := find[*monitoringv1.PrometheusRule](objs)
			require.Len(t, prs, 1)
			assert.Equal(t, "kps", prs[0].Labels["release"])
			raw, err := os.ReadFile(filepath.Join(tc.chart, tc.rules))
			require.NoError(t, err)
			var file monitoringv1.PrometheusRuleSpec
			require.NoError(t, yaml.UnmarshalStrict(raw, &file))
			assert.Equal(t, file, prs[0].Spec, "the rules promtool tests, as they are")
			assert.NotEmpty(t, file.Groups[0].Rules)
		})
	}
}

func metav1LabelSelector(m map[string]string) (labels.Selector, error) {
	return labels.ValidatedSelectorFromSet(m)
}

// Network policies are on by default: the agent takes nothing but its
// health and metrics port, from the monitoring namespace; the relay takes
// its public ports from anyone, its peer port from its own pods alone
// and its metrics port from the monitoring namespace. Every port they
// name is one the pods serve.
func TestChartsAdmitOnlyWhatTheyServe(t *testing.T) {
	ns := func(rule networkingv1.NetworkPolicyIngressRule) []string {
		var out []string
		for _, peer := range rule.From {
			if peer.NamespaceSelector != nil {
				for _, e := range peer.NamespaceSelector.MatchExpressions {
					out = append(out, e.Values...)
				}
			}
		}
		return out
	}
	ports := func(rule networkingv1.NetworkPolicyIngressRule) []string {
		var out []string
		for _, p := range rule.Ports {
			out = append(out, p.Port.String())
		}
		return out
	}

	_, objs := render(t, "clusterconnect-agent", "cc", agentValues...)
	nps := find[*networkingv1.NetworkPolicy](objs)
	require.Len(t, nps, 1)
	pods := podsOf(t, objs)
	np := nps[0].Spec
	assert.True(t, labels.SelectorFromSet(np.PodSelector.MatchLabels).Matches(labels.Set(pods.Labels)))
	assert.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, np.PolicyTypes, "egress left open")
	require.Len(t, np.Ingress, 1)
	assert.Equal(t, []string{"health"}, ports(np.Ingress[0]))
	assert.Equal(t, []string{"monitoring"}, ns(np.Ingress[0]))
	assert.True(t, hasPort(pods.Spec.Containers[0], "health"))

	_, objs = render(t, "clusterconnect-agent", "cc", append(agentValues, "--set-json", "networkPolicy.metricsNamespaces=[]")...)
	np = find[*networkingv1.NetworkPolicy](objs)[0].Spec
	assert.Empty(t, np.Ingress, "no namespace to scrape it: nothing comes in")
	_, objs = render(t, "clusterconnect-agent", "cc", append(agentValues, "--set", "networkPolicy.enabled=false")...)
	assert.Empty(t, find[*networkingv1.NetworkPolicy](objs))

	_, objs = render(t, "clusterconnect-relay", "cc", fleetValues...)
	pods = podsOf(t, objs)
	np = find[*networkingv1.NetworkPolicy](objs)[0].Spec
	assert.True(t, labels.SelectorFromSet(np.PodSelector.MatchLabels).Matches(labels.Set(pods.Labels)))
	require.Len(t, np.Ingress, 3)
	assert.Equal(t, []string{"https", "agents"}, ports(np.Ingress[0]))
	assert.Empty(t, np.Ingress[0].From, "the public ports: from anyone")
	assert.Equal(t, []string{"peer"}, ports(np.Ingress[1]))
	require.Len(t, np.Ingress[1].From, 1)
	assert.Nil(t, np.Ingress[1].From[0].NamespaceSelector, "the peer port: this namespace's relay pods only")
	assert.True(t, labels.SelectorFromSet(np.Ingress[1].From[0].PodSelector.MatchLabels).Matches(labels.Set(pods.Labels)))
	assert.Equal(t, []string{"metrics"}, ports(np.Ingress[2]))
	assert.Equal(t, []string{"monitoring"}, ns(np.Ingress[2]))
	for _, rule := range np.Ingress {
		for _, p := range ports(rule) {
			assert.True(t, hasPort(pods.Spec.Containers[0], p), "the relay serves %s", p)
		}
	}

	_, objs = render(t, "clusterconnect-relay", "cc", relayValues...)
	np = find[*networkingv1.NetworkPolicy](objs)[0].Spec
	require.Len(t, np.Ingress, 2, "one replica: no peer port")
	assert.Equal(t, []string{"https"}, ports(np.Ingress[0]))
}

// The relay's chart, like the agent's, refuses values it does not know
// and URLs that are not https://host[:port], at install.
func TestRelayChartRefusesWhatItDoesNotKnow(t *testing.T) {
	for _, tc := range []struct {
		set, words string
	}{
		{"replica=3", "additional properties 'replica' not allowed"},
		{"publicURL=relay.example.com", "publicURL"},
		{"agentService.publicURL=http://agents.example.com", "agentService/publicURL"},
		{"fleet.replicas=0", "fleet/replicas"},
		{"groupOverage.mode=without-groups", "groupOverage/mode"},
		{"extraArgs={write-timeout=60s}", "extraArgs"},
		{"metrics.serviceMonitor.interval=often", "metrics/serviceMonitor/interval"},
		{"networkPolicy.metricsNamespaces={Monitoring}", "metricsNamespaces"},
	} {
		refused(t, "clusterconnect-relay", relayValues, tc.set, tc.words)
	}
}

// promtool checks both charts' rule files and runs their unit tests: each
// alert fires on what it is for and not on what looks like it.
func TestAlertRules(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	promtool, err := kubetest.BuildPromtool(ctx, os.Stderr)
	require.NoError(t, err)
	for _, dir := range []string{"clusterconnect-agent/alerts", "clusterconnect-relay/alerts"} {
		files, err := filepath.Glob(filepath.Join(dir, "*-rules.yaml"))
		require.NoError(t, err)
		require.Len(t, files, 1)
		out, err := run(t, promtool, "check", "rules", "--lint=all", "--lint-fatal", files[0])
		require.NoError(t, err)
		t.Logf("promtool check rules %s:\n%s", files[0], out)
		test := strings.TrimSuffix(files[0], ".yaml") + "-test.yaml"
		out, err = run(t, promtool, "test", "rules", test)
		require.NoError(t, err)
		assert.Contains(t, out, "SUCCESS")
		t.Logf("promtool test rules %s:\n%s", test, out)
	}
}
