package kubetest

import (
	"context"
	"fmt"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// EnsureNamespace creates the namespace and its "default" ServiceAccount if
// they do not exist. With no controller-manager running, nothing else creates
// that ServiceAccount, and pods cannot be admitted without it.
func (e *Env) EnsureNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := e.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubetest: creating namespace %s: %w", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
	if _, err := e.client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubetest: creating default service account in %s: %w", name, err)
	}
	return nil
}

// ServiceAccount is a service account with a bound token.
type ServiceAccount struct {
	Namespace, Name string
	Token           string
	// Kubeconfig is a kubeconfig file that authenticates with Token.
	Kubeconfig string
}

// Username is the name the API server gives the service account.
func (sa *ServiceAccount) Username() string {
	return "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
}

// Subject is the RBAC subject for the service account.
func (sa *ServiceAccount) Subject() rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: sa.Namespace, Name: sa.Name}
}

// CreateServiceAccount creates a service account (and its namespace) with no
// permissions, requests a one-hour token for it, and writes a kubeconfig that
// uses the token.
func (e *Env) CreateServiceAccount(ctx context.Context, namespace, name string) (*ServiceAccount, error) {
	if err := e.EnsureNamespace(ctx, namespace); err != nil {
		return nil, err
	}
	obj := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	if _, err := e.client.CoreV1().ServiceAccounts(namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("kubetest: creating service account %s/%s: %w", namespace, name, err)
	}
	hour := int64(3600)
	tr, err := e.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubetest: requesting a token for %s/%s: %w", namespace, name, err)
	}
	sa := &ServiceAccount{Namespace: namespace, Name: name, Token: tr.Status.Token}
	sa.Kubeconfig = filepath.Join(e.Dir, "sa-"+namespace+"-"+name+".kubeconfig")
	if err := writeKubeconfig(sa.Kubeconfig, e.Host, e.CA.CertPEM(), sa.Username(), &clientcmdapi.AuthInfo{Token: sa.Token}); err != nil {
		return nil, err
	}
	return sa, nil
}

// Grant creates a ClusterRole called name with the given rules and binds it,
// cluster-wide, to the subjects. Bind explicit rules: with no
// controller-manager the aggregated roles (view, edit, admin) are empty.
func (e *Env) Grant(ctx context.Context, name string, rules []rbacv1.PolicyRule, subjects ...rbacv1.Subject) error {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	if _, err := e.client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("kubetest: creating ClusterRole %s: %w", name, err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   subjects,
	}
	if _, err := e.client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("kubetest: creating ClusterRoleBinding %s: %w", name, err)
	}
	return nil
}

// User is an RBAC subject for a user name.
func User(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
}

// Group is an RBAC subject for a group name.
func Group(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
}
