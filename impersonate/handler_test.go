package impersonate_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

func whoami(t *testing.T, k *kubetest.Kubectl, args ...string) authenticationv1.UserInfo {
	t.Helper()
	out := k.MustRun(t, testContext(t), nil, append([]string{"auth", "whoami", "-o", "json"}, args...)...)
	var review authenticationv1.SelfSubjectReview
	require.NoError(t, json.Unmarshal([]byte(out), &review), out)
	return review.Status.UserInfo
}

func TestWhoAmIIsTheTokensIdentity(t *testing.T) {
	p := newProxy(t, nil)
	info := whoami(t, p.kubectl(t, p.token(t, alice, nil)))
	assert.Equal(t, "alice@contoso.com", info.Username)
	assert.Equal(t, "oid-alice", info.UID)
	assert.ElementsMatch(t, []string{"grp-readers", "system:authenticated"}, info.Groups)
	assert.Equal(t, authenticationv1.ExtraValue{"oid-alice"}, info.Extra["clusterconnect.io/oid"])
	assert.Equal(t, authenticationv1.ExtraValue{tenantA}, info.Extra["clusterconnect.io/tid"])
}

func TestRBACBindsByUPNAndGroupObjectID(t *testing.T) {
	p := newProxy(t, nil)
	ctx := testContext(t)
	require.NoError(t, p.w.env.EnsureNamespace(ctx, "rbac-entra"))
	list := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}}}
	require.NoError(t, p.w.env.Grant(ctx, "entra-alice-by-upn", list, kubetest.User("alice@contoso.com")))
	require.NoError(t, p.w.env.Grant(ctx, "entra-operators-by-group", list, kubetest.Group("grp-operators")))

	for _, u := range []user{alice, bob} {
		k := p.kubectl(t, p.token(t, u, nil))
		require.Eventually(t, func() bool {
			res, err := k.Run(ctx, nil, "get", "configmaps", "-n", "rbac-entra")
			return err == nil && res.ExitCode == 0
		}, 30*time.Second, 100*time.Millisecond, "%s may list config maps", u.upn)
	}
	res, err := p.kubectl(t, p.token(t, carol, nil)).Run(ctx, nil, "get", "configmaps", "-n", "rbac-entra")
	require.NoError(t, err)
	assert.NotEqual(t, 0, res.ExitCode)
	assert.Contains(t, res.Stderr, `User "carol@contoso.com" cannot list resource "configmaps"`, "the API server's own 403")
}

// selfReview asks the API server who the request is from, with extra
// headers a client might try to smuggle in.
func selfReview(t *testing.T, p *proxy, bearer string, extra http.Header) (int, authenticationv1.UserInfo) {
	t.Helper()
	body := `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`
	req, err := http.NewRequest(http.MethodPost, p.srv.URL+"/apis/authentication.k8s.io/v1/selfsubjectreviews", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	for k, vs := range extra {
		req.Header[k] = append(req.Header[k], vs...) // keys as given: mixed case survives
	}
	resp, err := p.client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var review authenticationv1.SelfSubjectReview
	if resp.StatusCode == http.StatusCreated {
		require.NoError(t, json.Unmarshal(out, &review), string(out))
	}
	return resp.StatusCode, review.Status.UserInfo
}

func TestSmuggledHeadersNeverReachTheAPIServer(t *testing.T) {
	p := newProxy(t, nil)
	bearer := p.token(t, alice, nil)
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"impersonate user", http.Header{"Impersonate-User": {"system:admin"}}},
		{"impersonate group", http.Header{"Impersonate-Group": {"system:masters"}}},
		{"user and group", http.Header{"Impersonate-User": {"system:admin"}, "Impersonate-Group": {"system:masters"}}},
		{"uid", http.Header{"Impersonate-Uid": {"0"}}},
		{"extra", http.Header{"Impersonate-Extra-Scopes": {"everything"}, "Impersonate-Extra-Clusterconnect.io%2foid": {"oid-root"}}},
		{"lower case", http.Header{"impersonate-user": {"system:admin"}, "impersonate-group": {"system:masters"}}},
		{"odd case", http.Header{"iMPERSONATE-gROUP": {"system:masters"}}},
		{"duplicates", http.Header{"Impersonate-Group": {"system:masters", "system:masters"}}},
		{"named in Connection to strip ours", http.Header{"Connection": {"Impersonate-User, Impersonate-Group, Impersonate-Extra-Clusterconnect.io%2foid"}}},
		{"named in Connection and set", http.Header{"Connection": {"Impersonate-User"}, "Impersonate-User": {"system:admin"}}},
		{"a second Authorization", http.Header{"Authorization": {"Bearer " + p.w.env.AdminToken}}},
		{"forwarded headers", http.Header{"X-Forwarded-For": {"10.0.0.1"}, "X-Remote-User": {"system:admin"}, "X-Remote-Group": {"system:masters"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, info := selfReview(t, p, bearer, tc.header)
			if tc.name == "a second Authorization" {
				assert.Equal(t, http.StatusUnauthorized, code, "two credentials are refused outright")
				return
			}
			if hasImpersonate(tc.header) {
				assert.Equal(t, http.StatusForbidden, code, "nested impersonation is off: refused, not silently dropped")
				return
			}
			require.Equal(t, http.StatusCreated, code)
			assert.Equal(t, "alice@contoso.com", info.Username)
			assert.Equal(t, "oid-alice", info.UID)
			assert.ElementsMatch(t, []string{"grp-readers", "system:authenticated"}, info.Groups)
			assert.Equal(t, authenticationv1.ExtraValue{"oid-alice"}, info.Extra["clusterconnect.io/oid"])
			assert.NotContains(t, info.Extra, "scopes")
		})
	}
}

func hasImpersonate(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "impersonate-") {
			return true
		}
	}
	return false
}

func TestBadTokensGet401AndNeverReachTheAPIServer(t *testing.T) {
	p := newProxy(t, nil)
	key := p.w.issuer.SigningKey()
	good := oidctest.EntraClaims{Tenant: tenantA, Audience: clientID, UPN: alice.upn, OID: alice.oid}
	before := p.reached.Load()
	for _, tc := range []struct{ name, token string }{
		{"expired", p.token(t, alice, func(c *oidctest.EntraClaims) { c.Expiry = time.Now().Add(-time.Hour) })},
		{"wrong audience", p.token(t, alice, func(c *oidctest.EntraClaims) { c.Audience = "api://other" })},
		{"other tenant", p.token(t, alice, func(c *oidctest.EntraClaims) { c.Tenant = tenantB })},
		{"alg none", oidctest.AlgNone(good.Map())},
		{"unsigned", oidctest.Unsigned(key, good.Map())},
		{"garbage", "not-a-token"},
		{"service-account token without pass-through", p.w.agent.Token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _ := selfReview(t, p, tc.token, nil)
			assert.Equal(t, http.StatusUnauthorized, code)
			res, err := p.kubectl(t, tc.token).Run(testContext(t), nil, "get", "namespaces")
			require.NoError(t, err)
			assert.NotEqual(t, 0, res.ExitCode)
			assert.Contains(t, res.Stderr, "You must be logged in to the server", "kubectl's words for a 401")
		})
	}
	req, _ := http.NewRequest(http.MethodGet, p.srv.URL+"/api/v1/namespaces", nil)
	resp, err := p.client().Do(req)
	require.NoError(t, err)
	var st struct{ Kind, Message, Reason string }
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Equal(t, "Status", st.Kind)
	assert.Contains(t, st.Message, "no bearer token")
	assert.Equal(t, before, p.reached.Load(), "no bad request reached the API server")
}

func TestServiceAccountTokenPassThrough(t *testing.T) {
	p := newProxy(t, func(c *impersonate.Config) { c.PassThroughForeignTokens = true })
	info := whoami(t, p.kubectl(t, p.w.agent.Token))
	assert.Equal(t, p.w.agent.Username(), info.Username, "the API server authenticated the service account itself")
	assert.Contains(t, info.Groups, "system:serviceaccounts")

	// Entra tokens still go through impersonation.
	assert.Equal(t, "alice@contoso.com", whoami(t, p.kubectl(t, p.token(t, alice, nil))).Username)
	// The API server judges a foreign token's --as itself, against the
	// caller's own rights (the agent's service account may impersonate
	// users).
	asDave := whoami(t, p.kubectl(t, p.w.agent.Token), "--as", "dave@contoso.com")
	assert.Equal(t, "dave@contoso.com", asDave.Username)

	// And an expired Entra token is not "foreign": it is refused.
	code, _ := selfReview(t, p, p.token(t, alice, func(c *oidctest.EntraClaims) { c.Expiry = time.Now().Add(-time.Hour) }), nil)
	assert.Equal(t, http.StatusUnauthorized, code)
}

func TestNestedImpersonation(t *testing.T) {
	ctx := testContext(t)
	off := newProxy(t, nil)
	res, err := off.kubectl(t, off.token(t, bob, nil)).Run(ctx, nil, "get", "namespaces", "--as", "dave@contoso.com")
	require.NoError(t, err)
	assert.NotEqual(t, 0, res.ExitCode, "off by default: --as is refused, never dropped while the user believes it worked")
	assert.Contains(t, res.Stderr, "Error from server (Forbidden): impersonate: nested impersonation (kubectl --as, --as-group, --as-uid) is not enabled for this cluster")

	on := newProxy(t, func(c *impersonate.Config) { c.AllowNestedImpersonation = true })
	k := on.kubectl(t, on.token(t, bob, nil))
	code, _ := selfReview(t, on, on.token(t, bob, nil), http.Header{"Impersonate-User": {"dave@contoso.com"}})
	assert.Equal(t, http.StatusForbidden, code)
	res, err = k.Run(ctx, nil, "get", "--raw", "/api", "--as", "dave@contoso.com")
	require.NoError(t, err)
	assert.NotEqual(t, 0, res.ExitCode)
	assert.Contains(t, res.Stderr, `Error from server (Forbidden): bob@contoso.com is not allowed to impersonate user "dave@contoso.com"`)

	require.NoError(t, on.w.env.Grant(ctx, "bob-may-be-dave", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"users"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"dave@contoso.com"}},
	}, kubetest.User("bob@contoso.com")))
	require.Eventually(t, func() bool {
		res, err := k.Run(ctx, nil, "auth", "whoami", "--as", "dave@contoso.com", "-o", "jsonpath={.status.userInfo.username}")
		return err == nil && res.ExitCode == 0 && res.Stdout == "dave@contoso.com"
	}, 30*time.Second, 100*time.Millisecond)
	res, err = k.Run(ctx, nil, "auth", "whoami", "--as", "dave@contoso.com", "--as-group", "system:masters")
	require.NoError(t, err)
	assert.NotEqual(t, 0, res.ExitCode, "the group was not granted")
}

func TestReadyz(t *testing.T) {
	p := newProxy(t, nil)
	resp := httpGet(t, p.handler.Readyz())
	assert.Equal(t, http.StatusOK, resp.code, resp.body)

	p.w.issuer.FailJWKS(http.StatusServiceUnavailable)
	defer p.w.issuer.FailJWKS(0)
	fresh := newProxy(t, nil) // keys never fetched
	resp = httpGet(t, fresh.handler.Readyz())
	assert.Equal(t, http.StatusServiceUnavailable, resp.code)
	assert.Contains(t, resp.body, "token keys")
}

// A watch made with nested impersonation lasts as long as its caller may
// still impersonate whom it asked for: when RBAC takes the right away,
// the watch ends, while the caller's own watch goes on.
func TestNestedImpersonationEndsWithTheRight(t *testing.T) {
	ctx := testContext(t)
	p := newProxy(t, func(c *impersonate.Config) {
		c.AllowNestedImpersonation = true
		c.RecheckNestedEvery = 100 * time.Millisecond
	})
	suffix := fmt.Sprint(time.Now().UnixNano())
	ns := "nested-" + suffix
	require.NoError(t, p.w.env.EnsureNamespace(ctx, ns))
	read := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}}}
	require.NoError(t, p.w.env.Grant(ctx, "readers-"+suffix, read, kubetest.User("bob@contoso.com"), kubetest.User("erin@contoso.com")))
	impersonation := "bob-may-be-erin-" + suffix
	require.NoError(t, p.w.env.Grant(ctx, impersonation, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"users"}, Verbs: []string{"impersonate"}, ResourceNames: []string{"erin@contoso.com"}},
	}, kubetest.User("bob@contoso.com")))
	k := p.kubectl(t, p.token(t, bob, nil))
	require.Eventually(t, func() bool {
		res, err := k.Run(ctx, nil, "get", "configmaps", "-n", ns, "--as", "erin@contoso.com")
		return err == nil && res.ExitCode == 0
	}, 30*time.Second, 100*time.Millisecond)

	watch := func(args ...string) *watching { return startWatch(t, ctx, k, ns, args...) }
	line := func(w *watching, want string) { t.Helper(); w.line(t, want) }
	create := func(name string) { createConfigMap(t, ctx, p, ns, name) }
	asErin, asBob := watch("--as", "erin@contoso.com"), watch()
	create("before")
	line(asErin, "configmap/before")
	line(asBob, "configmap/before")

	require.NoError(t, p.w.env.Client().RbacV1().ClusterRoleBindings().Delete(ctx, impersonation, metav1.DeleteOptions{}))
	select {
	case <-asErin.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the watch as erin went on after bob lost the right to be erin")
	}
	create("after")
	line(asBob, "configmap/after") // bob's own goes on
}

// watching is a kubectl get --watch -o name that runs.
type watching struct {
	lines chan string
	done  chan struct{} // closed when kubectl has exited, with err
	err   error
}

func startWatch(t *testing.T, ctx context.Context, k *kubetest.Kubectl, ns string, args ...string) *watching {
	cmd, err := k.Command(ctx, append([]string{"get", "configmaps", "-n", ns, "--watch", "-o", "name"}, args...)...)
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	w := &watching{lines: make(chan string, 10), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		w.err = cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-w.done })
	return w
}

// line waits for the watch to print want.
func (w *watching) line(t *testing.T, want string) {
	t.Helper()
	for {
		select {
		case l := <-w.lines:
			if l == want {
				return
			}
		case <-w.done:
			t.Fatalf("the watch ended before printing %s: %v", want, w.err)
		case <-time.After(30 * time.Second):
			t.Fatalf("the watch never printed %s", want)
		}
	}
}

func createConfigMap(t *testing.T, ctx context.Context, p *proxy, ns, name string) {
	_, err := p.w.env.Client().CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// groupsOf is a GroupResolver whose answer the test changes: Graph, as
// far as the handler can tell.
type groupsOf struct {
	mu     sync.Mutex
	groups []string
}

func (g *groupsOf) ResolveGroups(context.Context, *tokens.Token) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.groups, nil
}

func (g *groupsOf) set(groups ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.groups = groups
}

// A watch made with a token whose groups were looked up (groups overage)
// lasts as long as its caller is in them: removed from the group that let
// it read, the caller's watch ends, and another's goes on.
func TestResolvedGroupsEndSessionsWhenTheyChange(t *testing.T) {
	ctx := testContext(t)
	suffix := fmt.Sprint(time.Now().UnixNano())
	readers := "grp-readers-" + suffix
	resolved := &groupsOf{groups: []string{readers}}
	p := newProxy(t, func(c *impersonate.Config) {
		m := tokens.EntraMapping()
		m.GroupResolver = resolved
		c.Mapping = m
		c.RecheckNestedEvery = 100 * time.Millisecond
		c.TracerProvider = sdktrace.NewTracerProvider() // the recheck holds with spans too
	})
	ns := "groups-" + suffix
	require.NoError(t, p.w.env.EnsureNamespace(ctx, ns))
	read := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}}}
	require.NoError(t, p.w.env.Grant(ctx, "readers-"+suffix, read, kubetest.Group(readers), kubetest.User(bob.upn)))
	fay := user{"fay@contoso.com", "oid-fay", nil}
	k := p.kubectl(t, p.token(t, fay, func(c *oidctest.EntraClaims) { c.GroupsOverage = true }))
	require.Eventually(t, func() bool {
		res, err := k.Run(ctx, nil, "get", "configmaps", "-n", ns)
		return err == nil && res.ExitCode == 0
	}, 30*time.Second, 100*time.Millisecond)

	asFay := startWatch(t, ctx, k, ns)
	asBob := startWatch(t, ctx, p.kubectl(t, p.token(t, bob, nil)), ns)
	createConfigMap(t, ctx, p, ns, "before")
	asFay.line(t, "configmap/before")
	asBob.line(t, "configmap/before")

	resolved.set() // fay leaves the group
	select {
	case <-asFay.done:
	case <-time.After(30 * time.Second):
		t.Fatal("fay's watch went on after she left the group that let her read")
	}
	createConfigMap(t, ctx, p, ns, "after")
	asBob.line(t, "configmap/after")
	res, err := k.Run(ctx, nil, "get", "configmaps", "-n", ns)
	require.NoError(t, err)
	assert.Contains(t, res.Stderr, "Forbidden", "and a new request of hers is refused")
}
