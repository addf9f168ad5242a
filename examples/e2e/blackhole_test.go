package e2e

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// darkPath is a TCP path from the agent to the relay that can go dark:
// darken stops it passing bytes on the connections it carries now, and
// closes nothing, as a network path that drops packets (a NAT or a
// firewall that lost its state); connections opened after pass.
type darkPath struct {
	ln     net.Listener
	to     string
	mu     sync.Mutex
	dark   chan struct{} // closed by darken, for the connections open then
	closed chan struct{}
}

func newDarkPath(t *testing.T, to string) *darkPath {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &darkPath{ln: ln, to: to, dark: make(chan struct{}), closed: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); close(p.closed) })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(conn)
		}
	}()
	return p
}

func (p *darkPath) addr() string { return p.ln.Addr().String() }

// darken makes every connection open now carry nothing more, either way.
func (p *darkPath) darken() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.dark)
	p.dark = make(chan struct{})
}

func (p *darkPath) serve(conn net.Conn) {
	defer conn.Close()
	up, err := net.Dial("tcp", p.to)
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	dark := p.dark
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { passUntilDark(up, conn, nil, dark, p.closed); done <- struct{}{} }()
	go func() { passUntilDark(conn, up, nil, dark, p.closed); done <- struct{}{} }()
	<-done
	<-done
}

// passUntilDark copies from to to, counting into n if set, until either
// fails (closing to) or dark is closed: from then on what it read is
// swallowed and it holds on, closing nothing, until closed.
func passUntilDark(to, from net.Conn, n *atomic.Int64, dark, closed <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		k, err := from.Read(buf)
		select {
		case <-dark:
			<-closed
			return
		default:
		}
		if k > 0 {
			if _, werr := to.Write(buf[:k]); werr != nil {
				to.Close()
				return
			}
			if n != nil {
				n.Add(int64(k))
			}
		}
		if err != nil {
			to.Close()
			return
		}
	}
}

// withAgentPath puts a darkPath between the agent and the relay.
func withAgentPath() func(*chain) {
	return func(c *chain) { c.agentPath = true }
}

// withProxyPath puts a darkPath between the client proxy and the relay.
func withProxyPath() func(*chain) {
	return func(c *chain) { c.proxyPath = true }
}

// A black hole between the client proxy and the relay, under a watch, with
// the real binaries: the proxy's pings find its connection dark within
// seconds, the watch resumes on a new connection without kubectl seeing
// anything, and the next kubectl get goes on that connection. (Without
// the pings nothing ever fails: the hole swallows what is sent and TCP
// keeps the connection, so the watch sees nothing more and every get
// hangs.)
func TestBlackHoleUnderTheClientProxy(t *testing.T) {
	c := newChain(t, withProxyPath())
	k := c.kubectl()
	// The namespace is the other tests' too: what this one makes goes.
	t.Cleanup(func() {
		k.Run(context.Background(), nil, "delete", "configmap", "-n", ns, "--ignore-not-found", "before-the-hole", "while-watching", "after-the-hole")
	})
	k.MustRun(t, ctx(t), nil, "create", "configmap", "before-the-hole", "-n", ns)
	watch := runKubectl(t, k, "get", "configmaps", "-n", ns, "--watch", "-o", "name")
	watch.line(t, "configmap/before-the-hole")
	// The watch's stream is open once it prints an object made after the
	// list.
	k.MustRun(t, ctx(t), nil, "create", "configmap", "while-watching", "-n", ns)
	watch.line(t, "configmap/while-watching")

	c.proxyDarkPath.darken()
	fault := time.Now()
	var answered time.Duration
	for answered == 0 {
		cx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := k.Run(cx, nil, "get", "configmaps", "-n", ns, "-o", "name")
		cancel()
		require.NoError(t, err, "kubectl hung for 20 s into the hole")
		if res.ExitCode == 0 {
			answered = time.Since(fault)
		} else {
			t.Logf("a get failed %v after the fault: %s", time.Since(fault).Round(time.Millisecond), res.Stderr)
		}
		require.Less(t, time.Since(fault), 20*time.Second, "no get answered: %s", res.Stderr)
	}
	t.Logf("the first get after the fault answered %v after it", answered.Round(time.Millisecond))
	assert.LessOrEqual(t, answered, 8*time.Second)

	// The watch goes on, on the new connection.
	k.MustRun(t, ctx(t), nil, "create", "configmap", "after-the-hole", "-n", ns)
	watch.line(t, "configmap/after-the-hole")
	select {
	case <-watch.exited:
		t.Fatalf("kubectl's watch ended: %q", watch.stderr.String())
	default:
	}
	assert.Empty(t, watch.stderr.String(), "kubectl saw nothing of it")
}

// A black hole between an idle agent and the relay, with the real
// binaries: the agent carried nothing, so only its own pings tell it the
// path went dark. Every kubectl get sent into the hole over the first
// 4 s (through the client proxy, whose own path is fine) exits 0 within
// 6 s of the fault. (Before the agent pinged every 2 s: 502 after 7 s,
// and the agent noticed after 25 s.)
func TestBlackHoleUnderAnIdleAgent(t *testing.T) {
	c := newChain(t, withAgentPath())
	k := c.kubectl()
	// The discovery cache warm, so each kubectl below sends one GET.
	k.MustRun(t, ctx(t), nil, "get", "configmaps", "-n", ns)
	time.Sleep(3 * time.Second) // nothing carried: the agent is idle

	c.agentDarkPath.darken()
	getsIntoTheHole(t, c, k, time.Now())
}

// The same black hole in a fleet: the agent's two connections on two
// replicas go dark, and its new ones land wherever the balancer's turn
// sends them. Every kubectl get sent into the hole through the client
// proxy (whose own balancer is fine) exits 0 within 6 s of the fault.
// Whether a retry has to cross to another replica here depends on those
// turns; the tunnel's TestFleetRetryFindsTheAgentsNewConnectionOnAnotherReplica
// makes it cross every time.
func TestFleetBlackHoleUnderAnIdleAgent(t *testing.T) {
	c := newChainWith(t, 3)
	k := c.kubectl()
	k.MustRun(t, ctx(t), nil, "get", "configmaps", "-n", ns)
	time.Sleep(3 * time.Second) // nothing carried: the agent is idle

	c.lb.darken()
	getsIntoTheHole(t, c, k, time.Now())
}

// getsIntoTheHole runs eight kubectl get over the 4 s after fault, and
// asserts that each exits 0 within 6 s of it.
func getsIntoTheHole(t *testing.T, c *chain, k *kubetest.Kubectl, fault time.Time) {
	t.Helper()
	type answer struct {
		code   int
		stderr string
		after  time.Duration
	}
	const n = 8
	answers := make(chan answer, n)
	for i := range n {
		go func() {
			time.Sleep(time.Duration(i) * 4 * time.Second / n)
			cx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := k.Run(cx, nil, "get", "configmaps", "-n", ns)
			if err != nil {
				res.ExitCode, res.Stderr = -1, err.Error()
			}
			answers <- answer{res.ExitCode, res.Stderr, time.Since(fault)}
		}()
	}
	for range n {
		a := <-answers
		t.Logf("exit %d after %v", a.code, a.after.Round(time.Millisecond))
		assert.Equal(t, 0, a.code, "after %v: %s", a.after, a.stderr)
		assert.LessOrEqual(t, a.after, 6*time.Second)
	}
	assert.Contains(t, c.logs("agent"), "its pings went unanswered", "the agent found the path dark by itself")
}
