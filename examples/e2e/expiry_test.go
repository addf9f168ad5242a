package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// policyWithExpiry is basePolicy with the cluster's sessionExpiry set.
func policyWithExpiry(mode string) string {
	return `{"clusters":{"e2e":{"groups":["` + aliceGrp + `"],"sessionExpiry":"` + mode + `"}}}`
}

// tokenOf is a token of the caller named by oid, in Alice's group, that
// expires at exp.
func (c *chain) tokenOf(t *testing.T, upn, oid string, exp time.Time) string {
	tok, err := c.issuer.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: audience, UPN: upn, OID: oid,
		Groups: []string{aliceGrp}, Expiry: exp})
	require.NoError(t, err)
	return tok
}

// expiryEnds: under sessionExpiry "end", alice's watch and exec, opened
// directly with a token that expires in 20 s, end when it expires, each
// saying why; the same sessions opened with a token of hers that lives
// on go on.
func expiryEnds(t *testing.T, c *chain) {
	c.setPolicy(t, policyWithExpiry("end"))
	defer c.setPolicy(t, basePolicy)
	exp := time.Now().Add(20 * time.Second).Truncate(time.Second)
	short := c.caller(t, cluster, c.tokenOf(t, aliceUPN, "oid-alice", exp))
	long := c.caller(t, cluster, c.tokenOf(t, aliceUPN, "oid-alice", time.Now().Add(time.Hour)))

	name := fmt.Sprintf("expiry-%d", time.Now().UnixNano())
	c.kubectl().MustRun(t, ctx(t), nil, "create", "configmap", name, "-n", ns)
	watch := func(k *kubetest.Kubectl) *running {
		r := runKubectl(t, k, "get", "configmaps", "-n", ns, "--watch", "--field-selector", "metadata.name="+name)
		r.line(t, name)
		return r
	}
	w, x, wLong, xLong := watch(short), runCat(t, short), watch(long), runCat(t, long)

	l := w.line(t, "expired")
	after := time.Since(exp)
	assert.Contains(t, l, "the token this session was opened with expired at "+exp.UTC().Format(time.RFC3339))
	assert.Contains(t, l, "run the command again")
	t.Logf("the watch printed %v after the token expired: %q", after.Round(10*time.Millisecond), l)
	assert.GreaterOrEqual(t, after, time.Duration(0), "not before the token expired")
	assert.Equal(t, 1, x.ended(t, 2*time.Second))
	assert.Contains(t, x.stderr.String(), "error: clusterconnect: the token this session was opened with expired")
	t.Logf("the exec ended %v after the token expired: %q", time.Since(exp).Round(10*time.Millisecond), x.stderr.String())

	fmt.Fprintln(xLong.stdin, "still here")
	xLong.line(t, "still here")
	c.kubectl().MustRun(t, ctx(t), nil, "delete", "configmap", name, "-n", ns)
	wLong.line(t, name) // the deletion, as an event
}

// renewLifetime is how long the tokens of a renewing client proxy live;
// each is replaced after 4 s, as a signed-in user's token source
// refreshes it.
const renewLifetime = 10 * time.Second

// renewing is a client proxy (proxy-renew.log) whose user's token lives
// renewLifetime and is replaced every 4 s; become changes whose tokens
// it gets from the next one on.
type renewing struct {
	k      *kubetest.Kubectl
	become func(upn, oid string)
}

func startRenewing(t *testing.T, c *chain) *renewing {
	tokenFile := filepath.Join(t.TempDir(), "token")
	var mu sync.Mutex
	who := [2]string{aliceUPN, "oid-alice"}
	write := func() {
		mu.Lock()
		defer mu.Unlock()
		writeFile(t, tokenFile, []byte(c.tokenOf(t, who[0], who[1], time.Now().Add(renewLifetime))))
	}
	write()
	stop := make(chan struct{})
	refreshed := make(chan struct{})
	go func() {
		defer close(refreshed)
		for {
			select {
			case <-stop:
				return
			case <-time.After(4 * time.Second):
				write()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-refreshed })
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	c.startProxy("proxy-renew", kubeconfig, "-token-file", tokenFile)
	r := &renewing{k: &kubetest.Kubectl{Kubeconfig: kubeconfig}, become: func(upn, oid string) {
		mu.Lock()
		who = [2]string{upn, oid}
		mu.Unlock()
		write()
	}}
	c.waitWorking(r.k)
	return r
}

// renewedSessions opens a watch and an exec through r and keeps both
// busy for three token lifetimes and more, failing if either ends.
func renewedSessions(t *testing.T, c *chain, r *renewing) (w, x *running) {
	batch := fmt.Sprintf("renew-%d", time.Now().UnixNano())
	create := func(i int) string {
		name := fmt.Sprintf("%s-%d", batch, i)
		manifest := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s, namespace: %s, labels: {batch: %s}}\n", name, ns, batch)
		c.kubectl().MustRun(t, ctx(t), strings.NewReader(manifest), "create", "-f", "-")
		return name
	}
	w = runKubectl(t, r.k, "get", "configmaps", "-n", ns, "--watch", "-l", "batch="+batch)
	x = runKubectl(t, r.k, "exec", "-i", "-n", ns, "web", "--", "cat")
	w.line(t, create(0))
	start := time.Now()
	for i := 1; time.Since(start) < 3*renewLifetime+2*time.Second; i++ {
		time.Sleep(renewLifetime / 2)
		w.line(t, create(i))
		fmt.Fprintf(x.stdin, "ping %d\n", i)
		x.line(t, fmt.Sprintf("ping %d", i))
	}
	t.Logf("watch and exec went on for %v, %.1f token lifetimes", time.Since(start).Round(time.Second), time.Since(start).Seconds()/renewLifetime.Seconds())
	return w, x
}

// renewedThroughTheProxy: under sessionExpiry "renew", a client proxy
// whose user's token lives 10 s and is renewed every 4 s keeps a watch
// and an exec for three token lifetimes and more; when it presents a
// token of another caller (bob), both end.
func renewedThroughTheProxy(t *testing.T, c *chain) {
	c.setPolicy(t, policyWithExpiry("renew"))
	defer c.setPolicy(t, basePolicy)
	r := startRenewing(t, c)
	w, x := renewedSessions(t, c, r)

	r.become("bob@contoso.com", "oid-bob")
	presented := time.Now()
	l := w.line(t, "another caller")
	assert.Contains(t, l, "a token of another caller was presented to renew this session")
	assert.Equal(t, 1, x.ended(t, 10*time.Second))
	assert.Contains(t, x.stderr.String(), "error: clusterconnect: the relay refused to carry the session on: a token of another caller was presented to renew this session")
	t.Logf("the watch ended %v after bob's token was written; the exec said %q", time.Since(presented).Round(10*time.Millisecond), x.stderr.String())
}
