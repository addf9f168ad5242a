package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterconnect/clusterconnect/internal/pki"
)

// AdminUser is the user name the admin credential authenticates as; it is in
// the system:masters group.
const AdminUser = "kubetest-admin"

// Env is a running etcd and kube-apiserver on loopback.
type Env struct {
	// Host is the API server's URL, https://127.0.0.1:<port>.
	Host string
	// CA signed the API server's serving certificate (and the stand-in
	// kubelets' certificates). Tests may issue client certificates from it:
	// the API server trusts it for client authentication.
	CA *pki.CA
	// AdminToken authenticates as AdminUser, a member of system:masters.
	AdminToken string
	// Kubeconfig is the path of a kubeconfig file for the admin, for kubectl.
	Kubeconfig string
	// Dir is the environment's scratch directory, removed by Stop.
	Dir string
	// AuditLog is the API server's audit log: one JSON event per line,
	// every request at the Metadata level (its auditID, user, verb,
	// resource and the stages it reached).
	AuditLog string

	client    kubernetes.Interface
	etcd      *process
	apiserver *process
	nodes     []*Node
}

// Start starts etcd and kube-apiserver on free loopback ports and waits until
// the API server reports ready. On error nothing is left running. Call Stop
// when done.
func Start(ctx context.Context) (_ *Env, err error) {
	apiserverBin, err := APIServerPath()
	if err != nil {
		return nil, err
	}
	etcdBin, err := EtcdPath()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubetest-")
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	e := &Env{Dir: dir}
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()

	etcdURL, err := e.startEtcd(ctx, etcdBin)
	if err != nil {
		return nil, err
	}
	if err := e.startAPIServer(ctx, apiserverBin, etcdURL); err != nil {
		return nil, err
	}
	if e.client, err = kubernetes.NewForConfig(e.RESTConfig()); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	return e, nil
}

// Stop stops the stand-in nodes, kube-apiserver and etcd and removes the
// scratch directory. It is safe to call more than once.
func (e *Env) Stop() {
	for _, n := range e.nodes {
		n.close()
	}
	e.nodes = nil
	e.apiserver.stop()
	e.etcd.stop()
	if e.Dir != "" {
		os.RemoveAll(e.Dir)
	}
}

// RESTConfig returns a fresh admin *rest.Config.
func (e *Env) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            e.Host,
		BearerToken:     e.AdminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.CA.CertPEM()},
		QPS:             -1, // no client-side rate limit in tests
	}
}

// Client returns an admin clientset.
func (e *Env) Client() kubernetes.Interface { return e.client }

func (e *Env) startEtcd(ctx context.Context, bin string) (string, error) {
	clientPort, err := freePort()
	if err != nil {
		return "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return "", err
	}
	clientURL := loopbackURL("http", clientPort)
	peerURL := loopbackURL("http", peerPort)
	e.etcd, err = startProcess("etcd", filepath.Join(e.Dir, "etcd.log"), bin,
		"--name=kubetest",
		"--data-dir="+filepath.Join(e.Dir, "etcd"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=kubetest="+peerURL,
	)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = e.etcd.waitFor(ctx, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, clientURL+"/health", "")
	})
	return clientURL, err
}

func (e *Env) startAPIServer(ctx context.Context, bin, etcdURL string) error {
	var err error
	if e.CA, err = pki.NewCA("kubetest-ca"); err != nil {
		return err
	}
	caFile := filepath.Join(e.Dir, "ca.crt")
	if err := os.WriteFile(caFile, e.CA.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	serving, err := e.CA.Issue(pki.LeafOptions{CommonName: "kube-apiserver", Hosts: append([]string{"kubernetes", "kubernetes.default.svc"}, pki.LoopbackHosts...), Server: true})
	if err != nil {
		return err
	}
	if err := serving.WriteFiles(filepath.Join(e.Dir, "apiserver.crt"), filepath.Join(e.Dir, "apiserver.key")); err != nil {
		return err
	}
	kubeletClient, err := e.CA.Issue(pki.LeafOptions{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}, Client: true})
	if err != nil {
		return err
	}
	if err := kubeletClient.WriteFiles(filepath.Join(e.Dir, "kubelet-client.crt"), filepath.Join(e.Dir, "kubelet-client.key")); err != nil {
		return err
	}
	if err := writeServiceAccountKey(filepath.Join(e.Dir, "sa.key"), filepath.Join(e.Dir, "sa.pub")); err != nil {
		return err
	}
	e.AdminToken = randomHex(24)
	tokens := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", e.AdminToken, AdminUser, AdminUser)
	if err := os.WriteFile(filepath.Join(e.Dir, "tokens.csv"), []byte(tokens), 0o600); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	e.AuditLog = filepath.Join(e.Dir, "audit.log")
	if err := os.WriteFile(filepath.Join(e.Dir, "audit-policy.yaml"), []byte(auditPolicy), 0o600); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	e.Host = loopbackURL("https", port)
	e.apiserver, err = startProcess("kube-apiserver", filepath.Join(e.Dir, "kube-apiserver.log"), bin,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(e.Dir, "certs"),
		"--tls-cert-file="+filepath.Join(e.Dir, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(e.Dir, "apiserver.key"),
		"--client-ca-file="+caFile,
		"--token-auth-file="+filepath.Join(e.Dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(e.Dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(e.Dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-certificate-authority="+caFile,
		"--kubelet-client-certificate="+filepath.Join(e.Dir, "kubelet-client.crt"),
		"--kubelet-client-key="+filepath.Join(e.Dir, "kubelet-client.key"),
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--audit-policy-file="+filepath.Join(e.Dir, "audit-policy.yaml"),
		"--audit-log-path="+e.AuditLog,
		"--audit-log-format=json",
	)
	if err != nil {
		return err
	}
	if err := e.writeKubeconfig(); err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool()}}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	return e.apiserver.waitFor(ctx, func(ctx context.Context) error {
		return httpOK(ctx, client, e.Host+"/readyz", e.AdminToken)
	})
}

func (e *Env) writeKubeconfig() error {
	e.Kubeconfig = filepath.Join(e.Dir, "admin.kubeconfig")
	return writeKubeconfig(e.Kubeconfig, e.Host, e.CA.CertPEM(), AdminUser, &clientcmdapi.AuthInfo{Token: e.AdminToken})
}

// WriteTokenKubeconfig writes a kubeconfig for kubectl that reaches server
// (trusting caPEM) with a bearer token.
func WriteTokenKubeconfig(path, server string, caPEM []byte, token string) error {
	return writeKubeconfig(path, server, caPEM, "user", &clientcmdapi.AuthInfo{Token: token})
}

// writeKubeconfig writes a one-context kubeconfig named "kubetest".
func writeKubeconfig(path, host string, caPEM []byte, user string, auth *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("kubetest: writing kubeconfig: %w", err)
	}
	return nil
}

func writeServiceAccountKey(keyPath, pubPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	return nil
}

func httpOK(ctx context.Context, client *http.Client, url, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("kubetest: reading random bytes: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// auditPolicy records every request's metadata, as a cluster whose
// operators look requests up by audit ID would.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`
