package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// demoNamespace is where the demo user may change things.
const (
	demoNamespace = "demo"
	demoPod       = "hello"
)

// cluster is what the trial sets up in its own kube-apiserver: RBAC for
// the agent and the demo user, a stand-in node with a pod that logs, and
// a web page the pod's port forwards to.
type cluster struct {
	env     *kubetest.Env
	agent   *kubetest.ServiceAccount
	webPort int
	stop    func()
}

func setUpCluster(ctx context.Context, env *kubetest.Env) (*cluster, error) {
	c := &cluster{env: env}
	var err error
	if c.agent, err = env.CreateServiceAccount(ctx, "clusterconnect", "agent"); err != nil {
		return nil, err
	}
	err = env.Grant(ctx, "clusterconnect-agent-impersonate", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"users", "groups"}, Verbs: []string{"impersonate"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"uids", "userextras/clusterconnect.io/oid", "userextras/clusterconnect.io/tid"}, Verbs: []string{"impersonate"}},
	}, c.agent.Subject())
	if err != nil {
		return nil, err
	}
	// With no controller-manager the aggregated roles (view, edit) are
	// empty, so the rules are spelled out.
	err = env.Grant(ctx, "trial-viewers", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"namespaces", "nodes", "pods"}, Verbs: []string{"get", "list", "watch"}},
	}, kubetest.Group(demoGroup))
	if err != nil {
		return nil, err
	}
	node, err := env.StartNode(ctx, "trial-node")
	if err != nil {
		return nil, err
	}
	if _, err := node.CreatePod(ctx, demoNamespace, demoPod); err != nil {
		return nil, err
	}
	if err := grantEditor(ctx, env); err != nil {
		return nil, err
	}
	if err := waitForGrant(ctx, env); err != nil {
		return nil, err
	}
	web, err := startWeb()
	if err != nil {
		return nil, err
	}
	c.webPort = web.Addr().(*net.TCPAddr).Port
	logCtx, stopLogs := context.WithCancel(context.Background())
	go tick(logCtx, node)
	c.stop = func() { stopLogs(); web.Close() }
	return c, nil
}

// grantEditor lets the demo group change what a developer changes in the
// demo namespace, exec, logs and port-forward included.
func grantEditor(ctx context.Context, env *kubetest.Env) error {
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "trial-editor", Namespace: demoNamespace},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets", "services", "pods"}, Verbs: []string{"*"}},
			{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"pods/exec", "pods/attach", "pods/portforward"}, Verbs: []string{"get", "create"}},
		},
	}
	rbac := env.Client().RbacV1()
	if _, err := rbac.Roles(demoNamespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the demo role: %w", err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "trial-editor", Namespace: demoNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{kubetest.Group(demoGroup)},
	}
	if _, err := rbac.RoleBindings(demoNamespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("binding the demo role: %w", err)
	}
	return nil
}

// waitForGrant waits until the API server's authorizer has seen the demo
// group's bindings (it learns of bindings through a watch).
func waitForGrant(ctx context.Context, env *kubetest.Env) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, attrs := range []authorizationv1.ResourceAttributes{
		{Verb: "list", Resource: "namespaces"},
		{Verb: "create", Resource: "pods", Subresource: "exec", Namespace: demoNamespace},
	} {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: demoUser, Groups: []string{demoGroup}, ResourceAttributes: &attrs,
		}}
		for {
			res, err := env.Client().AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
			if err == nil && res.Status.Allowed {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("the demo user's RBAC bindings never took effect: %w", ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// startWeb serves the page that kubectl port-forward reaches: the stand-in
// pod's ports are ports on this machine's loopback.
func startWeb() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the demo pod's port "+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)+", through kubectl port-forward\n")
	})}
	go srv.Serve(ln)
	return ln, nil
}

// tick writes a log line in the demo pod every second, for logs -f.
func tick(ctx context.Context, node *kubetest.Node) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n := 1; ; n++ {
		node.Log(demoNamespace, demoPod, fmt.Sprintf("%s tick %d", time.Now().Format(time.TimeOnly), n))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
