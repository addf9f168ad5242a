package kubetest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"github.com/clusterconnect/clusterconnect/internal/pki"
)

// ContainerName is the one container of every stand-in pod.
const ContainerName = "main"

// Node is a stand-in kubelet: a Node object whose kubelet endpoint is a
// loopback HTTPS server of ours. The real API server proxies exec, attach,
// port-forward and container logs to it; it answers with the kubelet's own
// streaming code (k8s.io/cri-streaming), so the wire protocols are real.
//
// Its containers run no processes. exec runs a fixed set of commands in
// memory (see [Node.ExecInContainer]); attach echoes stdin to stdout;
// port-forward to container port P connects to 127.0.0.1:P; logs are the
// lines given to [Node.Log].
type Node struct {
	Name string
	Port int // the kubelet endpoint's port on 127.0.0.1

	env *Env
	srv *http.Server
	ln  net.Listener

	mu   sync.Mutex
	pods map[string]*podState // by namespace/name
}

type podState struct {
	uid  string
	logs *logBuffer
}

// StartNode starts a stand-in kubelet and registers it as a ready Node.
// It is stopped by [Env.Stop].
func (e *Env) StartNode(ctx context.Context, name string) (*Node, error) {
	cert, err := e.CA.Issue(pki.LeafOptions{CommonName: "system:node:" + name, Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return nil, err
	}
	tlsCert, err := cert.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{tlsCert},
		// The API server authenticates to kubelets with the client
		// certificate it was given (--kubelet-client-certificate).
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  e.CA.Pool(),
		// SPDY upgrades need HTTP/1.1.
		NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		return nil, fmt.Errorf("kubetest: kubelet listener: %w", err)
	}
	n := &Node{Name: name, Port: ln.Addr().(*net.TCPAddr).Port, env: e, ln: ln, pods: map[string]*podState{}}
	n.srv = &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second}
	go n.srv.Serve(ln)
	e.nodes = append(e.nodes, n)

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
	created, err := e.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubetest: creating node %s: %w", name, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(n.Port)}},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: now, LastTransitionTime: now,
		}},
	}
	if _, err := e.client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("kubetest: setting node %s status: %w", name, err)
	}
	return n, nil
}

func (n *Node) close() {
	if n.srv != nil {
		n.srv.Close()
	}
}

// CreatePod creates a running pod with one container, ContainerName, bound to
// this node. The namespace is created if needed.
func (n *Node) CreatePod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	if err := n.env.EnsureNamespace(ctx, namespace); err != nil {
		return nil, err
	}
	noToken := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName:                     n.Name,
			AutomountServiceAccountToken: &noToken,
			Containers:                   []corev1.Container{{Name: ContainerName, Image: "kubetest.invalid/stand-in"}},
		},
	}
	created, err := n.env.client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubetest: creating pod %s/%s: %w", namespace, name, err)
	}
	n.mu.Lock()
	n.pods[namespace+"/"+name] = &podState{uid: string(created.UID), logs: newLogBuffer()}
	n.mu.Unlock()

	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    "127.0.0.1",
		PodIP:     "127.0.0.1",
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: ContainerName, Ready: true, Image: pod.Spec.Containers[0].Image,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	updated, err := n.env.client.CoreV1().Pods(namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubetest: setting pod %s/%s running: %w", namespace, name, err)
	}
	return updated, nil
}

// Log appends a line to the container log of a pod created by CreatePod;
// followers (kubectl logs -f) receive it at once.
func (n *Node) Log(namespace, pod, line string) error {
	p, ok := n.pod(namespace, pod)
	if !ok {
		return fmt.Errorf("kubetest: no pod %s/%s on node %s", namespace, pod, n.Name)
	}
	p.logs.append(line)
	return nil
}

func (n *Node) pod(namespace, name string) (*podState, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.pods[namespace+"/"+name]
	return p, ok
}

// Timeouts for the kubelet's streaming server, the kubelet's own defaults.
const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = remotecommand.DefaultStreamCreationTimeout
)

// routes serves the kubelet API paths the API server proxies to.
func (n *Node) routes() http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"/exec/{ns}/{pod}", "/exec/{ns}/{pod}/{uid}"} {
		mux.HandleFunc(prefix+"/{container}", n.serveExec)
	}
	for _, prefix := range []string{"/attach/{ns}/{pod}", "/attach/{ns}/{pod}/{uid}"} {
		mux.HandleFunc(prefix+"/{container}", n.serveAttach)
	}
	mux.HandleFunc("/portForward/{ns}/{pod}", n.servePortForward)
	mux.HandleFunc("/portForward/{ns}/{pod}/{uid}", n.servePortForward)
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", n.serveLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	return mux
}

// lookup finds the pod and container a kubelet request names, answering 404
// itself when there is none.
func (n *Node) lookup(w http.ResponseWriter, r *http.Request) (*podState, bool) {
	p, ok := n.pod(r.PathValue("ns"), r.PathValue("pod"))
	if !ok || (r.PathValue("uid") != "" && r.PathValue("uid") != p.uid) {
		http.Error(w, "pod does not exist", http.StatusNotFound)
		return nil, false
	}
	if c := r.PathValue("container"); c != "" && c != ContainerName {
		http.Error(w, "container "+c+" is not valid for pod "+r.PathValue("pod"), http.StatusNotFound)
		return nil, false
	}
	return p, true
}

func (n *Node) serveExec(w http.ResponseWriter, r *http.Request) {
	p, ok := n.lookup(w, r)
	if !ok {
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	remotecommand.ServeExec(w, r, n, r.PathValue("pod"), p.uid, ContainerName, cmd, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (n *Node) serveAttach(w http.ResponseWriter, r *http.Request) {
	p, ok := n.lookup(w, r)
	if !ok {
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommand.ServeAttach(w, r, n, r.PathValue("pod"), p.uid, ContainerName, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (n *Node) servePortForward(w http.ResponseWriter, r *http.Request) {
	p, ok := n.lookup(w, r)
	if !ok {
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, n, r.PathValue("pod"), p.uid, opts,
		streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

func (n *Node) serveLogs(w http.ResponseWriter, r *http.Request) {
	p, ok := n.lookup(w, r)
	if !ok {
		return
	}
	follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
	w.Header().Set("Content-Type", "text/plain")
	flusher, _ := w.(http.Flusher)
	next := 0
	for {
		lines, changed := p.logs.since(next)
		for _, l := range lines {
			if _, err := fmt.Fprintln(w, l); err != nil {
				return
			}
		}
		next += len(lines)
		if flusher != nil {
			flusher.Flush()
		}
		if !follow {
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

// logBuffer is an append-only list of log lines with a change signal.
type logBuffer struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) append(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
	close(b.changed)
	b.changed = make(chan struct{})
}

// since returns the lines from index i on, and a channel closed on the next
// append.
func (b *logBuffer) since(i int) ([]string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines[i:]...), b.changed
}
