// Package kubetest runs a real Kubernetes control plane for tests: etcd
// and a kube-apiserver, both built from the Go module proxy,
// on free loopback ports, with RBAC on, a generated CA and serving
// certificate, a service-account signing key and an admin credential.
//
// # Getting the parts
//
// hack/test.sh builds everything. By hand:
//
//	go run ./internal/testenv/kubetest/cmd/kubetest install   # builds kube-apiserver and etcd once, into the user cache dir
//
// Nothing is installed as a system package and no service is started: the
// binaries run only while a test runs them, on loopback ports in
// temporary directories.
//
// $KUBE_APISERVER, $ETCD and $KUBECTL point at other binaries.
//
// # Using it from tests
//
// One environment is shared by the tests of a package and started on first
// use:
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		env := kubetest.Shared(t)
//		k := kubetest.Kubectl{Kubeconfig: env.Kubeconfig}
//		out := k.MustRun(t, ctx, nil, "auth", "whoami")
//		…
//	}
//
// When a part is missing, [Shared] skips the test with the install command,
// or fails it when $CI is set: CI never skips silently.
//
// # Nodes, pods and streams
//
// [Env.StartNode] registers a stand-in kubelet whose endpoint is a loopback
// server of ours speaking the kubelet's real streaming protocols, so that
// kubectl exec, attach, port-forward and logs -f go through the real API
// server to it. See [Node].
package kubetest
