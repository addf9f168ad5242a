package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// replica is one relay process of a fleet.
type replica struct {
	name string
	addr atomic.Pointer[string] // read by the balancers as they dial
	args []string
	proc *proc
}

// startFleet starts n relay replicas on a 3-member etcd, each with its
// own listener and peer certificate, and a balancer at c.relayAddr.
func (c *chain) startFleet(n int, serving *pki.CA) {
	t := c.t
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	etcd, err := kubetest.StartEtcd(ctx, filepath.Join(c.dir, "fleet-etcd"), 3)
	kubetest.Require(t, err)
	t.Cleanup(etcd.Stop)
	peerCA, err := pki.NewCA("e2e fleet peer CA")
	require.NoError(t, err)
	peerCAFile := writeFile(t, filepath.Join(c.dir, "peer-ca.crt"), peerCA.CertPEM())
	for i := range n {
		leaf, err := peerCA.Issue(pki.LeafOptions{CommonName: fmt.Sprintf("replica-%d", i), Hosts: pki.LoopbackHosts, Server: true, Client: true})
		require.NoError(t, err)
		cert, key := filepath.Join(c.dir, fmt.Sprintf("peer-%d.crt", i)), filepath.Join(c.dir, fmt.Sprintf("peer-%d.key", i))
		require.NoError(t, leaf.WriteFiles(cert, key))
		r := &replica{name: fmt.Sprintf("relay-%d", i)}
		r.args = append([]string(nil), c.relayArgs...)
		r.args = append(r.args, "-etcd-endpoints", strings.Join(etcd.Endpoints(), ","), "-replica-id", r.name,
			"-peer-listen", "", "-peer-cert", cert, "-peer-key", key, "-peer-ca", peerCAFile,
			"-drain-timeout", "10s")
		c.replicas = append(c.replicas, r)
		c.startReplica(r, true)
	}
	// The agents' way in is the balancer, on a port of its own: a port
	// freePort found free may be another test's process's by now.
	c.lb = newBalancer(t, "127.0.0.1:0", c.replicas)
	c.relayAddr = c.lb.ln.Addr().String()
	c.clientLB = newBalancer(t, "127.0.0.1:0", c.replicas)
}

// startReplica starts r and waits until it serves. With fresh, or when
// its ports were taken meanwhile (freePort's port is free when asked, and
// other tests' processes run beside these), it takes new ones: the
// balancers read r.addr at each dial.
func (c *chain) startReplica(r *replica, fresh bool) {
	t := c.t
	for try := 0; ; try++ {
		if fresh || try > 0 {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			r.addr.Store(&addr)
			for j, a := range r.args {
				switch a {
				case "-listen":
					r.args[j+1] = addr
				case "-peer-listen":
					r.args[j+1] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
				}
			}
		}
		r.proc = c.startAs(r.name, "relay", r.args...)
		var taken bool
		require.Eventually(t, func() bool {
			log := c.logs(r.name)
			select {
			case <-r.proc.done:
				taken = strings.Contains(log, "address already in use")
				return true
			default:
			}
			return strings.Contains(log, "etcd directory session started")
		}, time.Minute, 50*time.Millisecond, "%s: %s", r.name, c.logs(r.name))
		if !taken {
			return
		}
		require.Less(t, try, 3, "%s: ports taken again and again: %s", r.name, c.logs(r.name))
	}
}

// killReplica SIGKILLs replica i and starts it again.
func (c *chain) killReplica(i int) {
	r := c.replicas[i]
	r.proc.kill()
	c.startReplica(r, false)
}

// drainReplica stops replica i with SIGTERM, as a rolling update does,
// waits for it to exit, and starts it again.
func (c *chain) drainReplica(i int) {
	r := c.replicas[i]
	r.proc.cmd.Process.Signal(syscall.SIGTERM)
	<-r.proc.done
	c.startReplica(r, false)
}

// balancer is a round-robin TCP balancer in front of a fleet, as a cloud
// load balancer is: a dial that fails goes to the next replica.
type balancer struct {
	ln       net.Listener
	replicas []*replica
	next     atomic.Uint32
	mu       sync.Mutex
	conns    map[*lbConn]struct{}
	dark     chan struct{} // closed by darken, for the connections open then
	closed   chan struct{}
}

// darken makes every connection open now carry nothing more, either way,
// closing nothing: a black hole (passUntilDark); later ones pass.
func (b *balancer) darken() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.dark)
	b.dark = make(chan struct{})
}

// lbConn is one balanced connection: where it went, and the bytes each
// way so far.
type lbConn struct {
	replica  int
	up, down atomic.Int64
}

func newBalancer(t *testing.T, addr string, replicas []*replica) *balancer {
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	b := &balancer{ln: ln, replicas: replicas, conns: map[*lbConn]struct{}{}, dark: make(chan struct{}), closed: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); close(b.closed) })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(conn)
		}
	}()
	return b
}

func (b *balancer) serve(conn net.Conn) {
	defer conn.Close()
	for range b.replicas {
		i := int(b.next.Add(1)) % len(b.replicas)
		up, err := net.Dial("tcp", *b.replicas[i].addr.Load())
		if err != nil {
			continue
		}
		defer up.Close()
		lc := &lbConn{replica: i}
		b.mu.Lock()
		b.conns[lc] = struct{}{}
		dark := b.dark
		b.mu.Unlock()
		defer func() { b.mu.Lock(); delete(b.conns, lc); b.mu.Unlock() }()
		done := make(chan struct{}, 2)
		go func() { passUntilDark(up, conn, &lc.up, dark, b.closed); done <- struct{}{} }()
		go func() { passUntilDark(conn, up, &lc.down, dark, b.closed); done <- struct{}{} }()
		<-done
		<-done
		return
	}
}

// busiest is the replica behind the open connection that has carried the
// most bytes in the direction asked.
func (b *balancer) busiest(upward bool) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	best, most := -1, int64(-1)
	for lc := range b.conns {
		n := lc.down.Load()
		if upward {
			n = lc.up.Load()
		}
		if n > most {
			best, most = lc.replica, n
		}
	}
	return best
}

// A fleet of three relay replicas on a 3-member etcd behind a balancer,
// as an operator runs it; in proxy mode the replica carrying a session is
// SIGKILLed under it (and started again), and the session goes on.
func TestFleetSessionsSurviveAReplica(t *testing.T) {
	c := newChainWith(t, 3)
	k := c.kubectl()

	t.Run("exec -i: 64 MiB into sha256sum", func(t *testing.T) {
		execAcross(t, c, k, func() {
			i := c.clientLB.busiest(true)
			t.Logf("killing %s, which carries the exec", c.replicas[i].name)
			c.killReplica(i)
		})
	})

	t.Run("port-forward: a 64 MiB download", func(t *testing.T) {
		portForwardAcross(t, c, k, func() {
			i := c.clientLB.busiest(false)
			t.Logf("killing %s, which carries the port-forward", c.replicas[i].name)
			c.killReplica(i)
		})
	})

	t.Run("exec -i across a drain of the replica carrying it", func(t *testing.T) {
		execAcross(t, c, k, func() {
			i := c.clientLB.busiest(true)
			t.Logf("draining %s, which carries the exec", c.replicas[i].name)
			c.drainReplica(i)
		})
	})

	t.Run("direct mode: an exec goes on through its replica's drain, then ends in words", func(t *testing.T) {
		kc := filepath.Join(c.dir, "fleet-direct-kubeconfig")
		out, err := exec.Command(filepath.Join(c.bin, "proxy"), "kubeconfig", "-relay-url", "https://"+c.clientLB.ln.Addr().String(),
			"-relay-ca", c.relayCA, "-cluster-id", cluster, "-token-file", c.tokenFile, "-kubeconfig", kc).CombinedOutput()
		require.NoError(t, err, "%s", out)
		k := &kubetest.Kubectl{Kubeconfig: kc}
		x := runKubectl(t, k, "exec", "-i", "-n", ns, "web", "--", "cat")
		echoes := 0
		roundTrip := func(lines int) {
			t.Helper()
			for range lines {
				fmt.Fprintln(x.stdin, strings.Repeat("x", 63))
			}
			echoes++
			fmt.Fprintf(x.stdin, "echo %d\n", echoes)
			x.line(t, fmt.Sprintf("echo %d", echoes))
		}
		// A megabyte through cat makes the exec's the busiest connection.
		roundTrip(1 << 14)

		i := c.clientLB.busiest(true)
		r := c.replicas[i]
		t.Logf("draining %s, which carries the exec", r.name)
		start := time.Now()
		require.NoError(t, r.proc.cmd.Process.Signal(syscall.SIGTERM))
		time.Sleep(time.Second)
		roundTrip(0) // during the drain

		code := x.ended(t, time.Minute)
		assert.Equal(t, 1, code, "stderr %q", x.stderr.String())
		assert.Contains(t, x.stderr.String(), "error: clusterconnect: ")
		t.Logf("kubectl exec ended %v after SIGTERM (drain timeout 10s): exit %d, stderr %q", time.Since(start).Round(time.Millisecond), code, x.stderr.String())
		<-r.proc.done
		c.startReplica(r, false)
	})

	t.Run("agents spread again when a fleet shrunk to one grows back", func(t *testing.T) {
		require.Eventually(t, func() bool { return spread(agentReplicas(c.logs("agent"))) }, time.Minute, 100*time.Millisecond,
			"the agent's connections never spread: %v", agentReplicas(c.logs("agent")))
		for _, i := range []int{1, 2} {
			c.replicas[i].proc.kill()
		}
		require.Eventually(t, func() bool {
			at := agentReplicas(c.logs("agent"))
			return at["0"] == c.replicas[0].name && at["1"] == c.replicas[0].name
		}, time.Minute, 100*time.Millisecond, "both connections on the one replica left: %v", agentReplicas(c.logs("agent")))
		for _, i := range []int{1, 2} {
			c.startReplica(c.replicas[i], false)
		}
		start := time.Now()
		require.Eventually(t, func() bool { return spread(agentReplicas(c.logs("agent"))) }, tunnel.DefaultMaxBackoff, 100*time.Millisecond,
			"the agent's connections stayed on one replica: %v", agentReplicas(c.logs("agent")))
		t.Logf("the agent spread over two replicas %v after the fleet grew back", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("watch: 1,000 changes, each seen once, across a replica's SIGKILL", func(t *testing.T) {
		watchAcross(t, c, 0, map[int]func(){1000 / 3: func() {
			r := c.clientLB.busiest(false)
			t.Logf("killing %s, which carries the watches", c.replicas[r].name)
			c.killReplica(r)
		}})
	})

	t.Run("watch: 1,000 changes, each seen once, across a rolling restart", func(t *testing.T) {
		// Each replica drained in turn (SIGTERM, up to 10 s) and started
		// again, as a rolling update does, while the writes go on.
		restarted := make(chan struct{})
		watchAcross(t, c, 80*time.Millisecond, map[int]func(){50: func() {
			go func() {
				defer close(restarted)
				for i := range c.replicas {
					t.Logf("draining %s", c.replicas[i].name)
					c.drainReplica(i)
				}
			}()
		}})
		<-restarted
	})

	t.Run("watch: 1,000 changes, each seen once, across each agent replica's SIGKILL", func(t *testing.T) {
		second := c.startSecondAgent(t)
		defer func() { second.kill() }()
		watchAcross(t, c, 0, map[int]func(){
			1000 / 3: func() {
				t.Log("killing the first agent replica")
				c.restartAgent()
			},
			2 * 1000 / 3: func() {
				t.Log("killing the second agent replica")
				second.kill()
				second = c.startSecondAgent(t)
			},
		})
	})
}

// agentReplicas reads, from the agent's log, the replica each of its
// connections is on now ("" while one is down).
func agentReplicas(log string) map[string]string {
	at := map[string]string{}
	slot := regexp.MustCompile(`slot=(\d+)`)
	for _, l := range strings.Split(log, "\n") {
		m := slot.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		switch {
		case strings.Contains(l, `msg="tunnel connection open"`):
			at[m[1]] = field(l, "replica")
		case strings.Contains(l, `msg="tunnel connection moved`):
			at[m[1]] = field(l, "to")
		case strings.Contains(l, `msg="tunnel connection closed"`):
			at[m[1]] = ""
		}
	}
	return at
}

func field(line, name string) string {
	m := regexp.MustCompile(` ` + name + `=(\S*)`).FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	return m[1]
}

// spread reports whether the agent's two connections are up on two
// replicas.
func spread(at map[string]string) bool {
	return len(at) == 2 && at["0"] != "" && at["1"] != "" && at["0"] != at["1"]
}

// watchAcross creates 1,000 configmaps, pace apart in each of 8 writers,
// running faults[i] before the i-th, while kubectl get -w and two
// client-go informers (JSON, protobuf) watch them through the client
// proxy: each sees every one once, none twice, and kubectl keeps
// watching.
func watchAcross(t *testing.T, c *chain, pace time.Duration, faults map[int]func()) {
	const total = 1000
	k := c.kubectl()
	batch := fmt.Sprintf("b%d", rand.Uint32())
	cmd, err := k.Command(ctx(t), "get", "configmaps", "-n", ns, "-l", "batch="+batch, "--watch", "-o", "name")
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	seen := make(chan string, 2000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			seen <- sc.Text()
		}
		close(seen)
	}()
	// Two client-go informers through the client proxy as well, one
	// reading JSON and one protobuf.
	informers := map[string]*informerCount{}
	for _, ct := range []string{"application/json", "application/vnd.kubernetes.protobuf"} {
		informers[ct] = startInformer(t, c.kubeconfig, ct, batch)
	}
	// The watch is open once its first event comes.
	client := c.env.Client()
	create := func(i int) {
		_, err := client.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%04d", batch, i), Labels: map[string]string{"batch": batch}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	create(0)
	require.Equal(t, fmt.Sprintf("configmap/%s-0000", batch), <-seen, "stderr: %s", stderr.String())

	var wg sync.WaitGroup
	next := atomic.Int32{}
	next.Store(1)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < total; i = int(next.Add(1) - 1) {
				if f := faults[i]; f != nil {
					t.Logf("after %d writes", i)
					f()
				}
				create(i)
				time.Sleep(pace)
			}
		}()
	}
	wg.Wait()
	got := map[string]int{fmt.Sprintf("configmap/%s-0000", batch): 1}
	timeout := time.After(time.Minute)
	for len(got) < total {
		select {
		case name, ok := <-seen:
			require.True(t, ok, "kubectl's watch ended: %s", stderr.String())
			got[name]++
			require.Equal(t, 1, got[name], "%s seen twice", name)
		case <-timeout:
			t.Fatalf("saw %d of %d changes; stderr: %s", len(got), total, stderr.String())
		}
	}
	assert.Nil(t, cmd.ProcessState, "kubectl is still watching")
	assert.Empty(t, stderr.String())
	for ct, inf := range informers {
		require.Eventually(t, func() bool { return inf.distinct() == total }, time.Minute, 50*time.Millisecond,
			"%s informer: %d of %d", ct, inf.distinct(), total)
		assert.Zero(t, inf.twice(), "%s informer: objects added twice", ct)
		assert.Zero(t, inf.updates.Load(), "%s informer: updates, as a relist after a broken watch makes", ct)
	}
}

// informerCount counts what a client-go informer saw.
type informerCount struct {
	mu      sync.Mutex
	adds    map[string]int
	updates atomic.Int32
}

func (i *informerCount) distinct() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return len(i.adds)
}

func (i *informerCount) twice() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	n := 0
	for _, v := range i.adds {
		if v > 1 {
			n++
		}
	}
	return n
}

// startInformer runs a configmap informer for the batch through the
// client proxy of kubeconfig, speaking contentType, until the test ends.
func startInformer(t *testing.T, kubeconfig, contentType, batch string) *informerCount {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	cfg.ContentType = contentType
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "batch=" + batch }))
	count := &informerCount{adds: map[string]int{}}
	inf := f.Core().V1().ConfigMaps().Informer()
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			count.mu.Lock()
			count.adds[obj.(*corev1.ConfigMap).Name]++
			count.mu.Unlock()
		},
		UpdateFunc: func(any, any) { count.updates.Add(1) },
	})
	require.NoError(t, err)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); f.Shutdown() })
	f.Start(stop)
	require.True(t, cache.WaitForCacheSync(stop, inf.HasSynced))
	return count
}

// lockedBuffer is a strings.Builder safe to read while a process writes
// it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// In a fleet, the client proxy's renewals reach the replica its HTTP/2
// connection goes to, while an exec's carrier, a connection of its own,
// goes through the balancer to another. There the exec's token expires
// unrenewed, the replica ends its carrier in words a renewing client
// resumes past, and the client proxy re-attaches with the user's current
// token: the exec and the watch go on for three token lifetimes and more.
func TestFleetRenewalKeepsSessionsOnEveryReplica(t *testing.T) {
	c := newChainWith(t, 3, withPolicy(policyWithExpiry("renew")))
	r := startRenewing(t, c)
	renewedSessions(t, c, r)
	expired := 0
	for _, rep := range c.replicas {
		expired += strings.Count(c.logs(rep.name), "end=expired")
	}
	assert.Positive(t, expired, "no session ended unrenewed at a replica: the test did not cross replicas")
	t.Logf("sessions ended unrenewed at their replica and went on: %d", expired)
}

// Under "sessionExpiry": "end", an exec through the client proxy ends
// when the token it was opened with expires, though its carrier would
// re-attach through another replica with the user's current token: the
// replicas share, in etcd, which sessions they ended and why.
func TestFleetEndAtExpiryIsNotUndoneByAnotherReplica(t *testing.T) {
	c := newChainWith(t, 3, withPolicy(policyWithExpiry("end")))
	r := startRenewing(t, c)
	x := runCat(t, r.k)
	start := time.Now()
	code := x.ended(t, renewLifetime+15*time.Second)
	t.Logf("the exec ended %v after it began: exit %d, %q", time.Since(start).Round(10*time.Millisecond), code, x.stderr.String())
	assert.Equal(t, 1, code)
	assert.Contains(t, x.stderr.String(), "error: clusterconnect: the relay refused to carry the session on: the token this session was opened with expired")
}
