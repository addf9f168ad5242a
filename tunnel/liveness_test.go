package tunnel_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// An idle connection whose network works is kept however long it idles:
// pings answered every interval, no reconnect.
func TestIdleLiveConnectionIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemHarness(t, echo, nil, nil)
		opened := h.relay.Stats().ConnectionsOpened
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.True(t, h.relay.Connected(clusterID))
		assert.Equal(t, opened, h.relay.Stats().ConnectionsOpened, "no connection was replaced")
		resp, err := h.client().Get(h.url("/after-an-hour"))
		require.NoError(t, err)
		assert.Equal(t, "/after-an-hour", decode(t, resp).Path)
	})
}

// A connection whose network silently stops carrying packets is dropped
// by the agent once its ping goes unanswered, within
// DefaultAgentPingInterval and DefaultAgentPingTimeout of the fault, and
// dialed again at once: the cluster is back before the relay, which
// pings an idle connection only every DefaultPingInterval, has noticed.
// The relay drops its end of the dead one within its own bounds.
func TestSilentlyDeadConnectionIsDroppedInTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemHarness(t, echo, nil, func(c *tunnel.AgentConfig) { c.Connections = 1 })
		time.Sleep(time.Minute) // pings going both ways for a while
		synctest.Wait()
		h.net.Freeze("agent")
		time.Sleep(tunnel.DefaultAgentPingTimeout - time.Millisecond)
		synctest.Wait()
		assert.EqualValues(t, 1, h.agent.Stats().ConnectionsOpened, "no ping can have gone unanswered yet")
		time.Sleep(tunnel.DefaultAgentPingInterval + 2*time.Millisecond)
		synctest.Wait()
		assert.EqualValues(t, 2, h.agent.Stats().ConnectionsOpened, "dropped and dialed again within %v", tunnel.DefaultAgentPingInterval+tunnel.DefaultAgentPingTimeout)
		assert.EqualValues(t, 1, h.agent.Stats().ConnectionsClosedBy["lost"])

		resp, err := h.client().Get(h.url("/on-the-new-one"))
		require.NoError(t, err)
		assert.Equal(t, "/on-the-new-one", decode(t, resp).Path)

		assert.Len(t, h.relay.Conns(), 2, "the relay keeps the dead one until its own ping goes unanswered")
		time.Sleep(tunnel.DefaultPingInterval + tunnel.DefaultPingTimeout)
		synctest.Wait()
		assert.Len(t, h.relay.Conns(), 1)
		assert.EqualValues(t, 1, h.relay.Stats().ConnectionsClosedBy["lost"])
	})
}

// countingDoor lets every request in and counts the ones not yet over,
// as the front door counts a caller's streams against its limit.
type countingDoor struct{ open atomic.Int32 }

func (d *countingDoor) AuthorizeClient(*http.Request, string) (func(), error) {
	d.open.Add(1)
	return func() { d.open.Add(-1) }, nil
}

// A connection that carries a request is pinged after BusyPingAfter of
// silence and dropped when the answer does not come within
// BusyPingTimeout: a black hole under a watch is found in 5 s, not 25.
// The watch ends then (its client sees the stream fail), and it no longer
// counts against its caller's limits.
func TestBlackHoleUnderARequestIsFoundInSeconds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		door := &countingDoor{}
		release := make(chan struct{})
		defer close(release)
		h := newMemHarness(t, streamer(release), func(c *tunnel.RelayConfig) { c.ClientAuthorizer = door },
			func(c *tunnel.AgentConfig) { c.Connections = 1 })
		resp, err := h.client().Get(h.url("/watch"))
		require.NoError(t, err)
		defer resp.Body.Close()
		lines := newLineReader(resp.Body)
		assert.Equal(t, "first", lines.next(t))
		ended := make(chan error, 1)
		go func() { _, err := io.Copy(io.Discard, resp.Body); ended <- err }()
		assert.EqualValues(t, 1, door.open.Load())

		h.net.Freeze("agent")
		time.Sleep(tunnel.DefaultBusyPingAfter + tunnel.DefaultBusyPingTimeout - time.Millisecond)
		synctest.Wait()
		assert.Zero(t, h.relay.Stats().ConnectionsClosed, "not dropped before the busy bounds")
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		assert.EqualValues(t, 1, h.relay.Stats().ConnectionsClosedBy["lost"], "dropped within %v", tunnel.DefaultBusyPingAfter+tunnel.DefaultBusyPingTimeout)
		select {
		case err := <-ended:
			assert.Error(t, err, "the watch's client sees its stream fail")
		default:
			t.Fatal("the watch on the dead connection did not end")
		}
		assert.Zero(t, door.open.Load(), "the request no longer counts against its caller")
	})
}

// After the relay was away, the agent's first connection back brings the
// others with it: a slot still waiting out its backoff dials at once
// instead of up to MaxBackoff later.
func TestOtherConnectionsComeBackWithTheFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemHarness(t, echo, nil, func(c *tunnel.AgentConfig) { c.Connections = 4 })
		time.Sleep(4 * time.Second) // short of StableAfter: their backoff is not reset
		back := h.net.Cut("agent")
		time.Sleep(20 * time.Second)
		synctest.Wait()
		require.Empty(t, h.relay.Conns())
		back()
		for len(h.relay.Conns()) == 0 {
			time.Sleep(time.Millisecond)
		}
		first := time.Now()
		for len(h.relay.Conns()) < 4 {
			time.Sleep(time.Millisecond)
			require.Less(t, time.Since(first), tunnel.DefaultMaxBackoff, "the others never came back")
		}
		assert.Less(t, time.Since(first), 100*time.Millisecond, "the others came back with the first")
	})
}

// A GET on a black-holed connection, under an agent that carried nothing
// and was set to ping only as rarely as the relay does (so it does not
// know its path went dark): the relay drops the connection
// BusyPingAfter+BusyPingTimeout after the GET went, and does not retry
// on the agent's other connection, as dark and silent since before: it
// pings it, and with no answer within RetryWait the client has its 502.
// (Before busy pings: 24 s, then 502 after as long again; before this
// rule, the retry on the dark one took 3 s more.)
func TestRetryOnASilentConnectionIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		h := newMemHarness(t, streamer(release), nil, func(c *tunnel.AgentConfig) { // two connections
			c.PingInterval, c.PingTimeout = tunnel.DefaultPingInterval, tunnel.DefaultPingTimeout
		})
		h.net.Freeze("agent")
		start := time.Now()
		resp, err := h.client().Get(h.url("/into-the-black-hole"))
		require.NoError(t, err)
		resp.Body.Close()
		took := time.Since(start)
		t.Logf("answered %s after %v", resp.Status, took)
		assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
		assert.LessOrEqual(t, took, tunnel.DefaultBusyPingAfter+tunnel.DefaultBusyPingTimeout+tunnel.DefaultRetryWait)
		assert.EqualValues(t, 1, h.relay.Stats().StreamsOpened, "no retry into the other dark connection")
	})
}

// The same black hole under an agent with its own default pings: it
// finds its connections dark by itself, though nothing it carried told
// it, and dials again at once; every GET sent into the hole over the
// first 4 s is answered 200 within 6 s of the fault.
func TestGETsIntoABlackHoleUnderAnIdleAgent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemHarness(t, echo, nil, nil) // two connections
		time.Sleep(tunnel.DefaultStableAfter) // long-lived connections, as in production
		h.net.Freeze("agent")
		intoTheHole(t, h, time.Now(), 20)
	})
}

// intoTheHole sends n GETs over the first 4 s after fault and asserts
// each is answered 200 within 6 s of it.
func intoTheHole(t *testing.T, h *memHarness, fault time.Time, n int) {
	t.Helper()
	type answer struct {
		status int
		after  time.Duration
	}
	answers := make(chan answer, n)
	for i := range n {
		go func() {
			time.Sleep(time.Duration(i) * 4 * time.Second / time.Duration(n))
			resp, err := h.client().Get(h.url("/into-the-black-hole"))
			if err != nil {
				answers <- answer{0, time.Since(fault)}
				return
			}
			resp.Body.Close()
			answers <- answer{resp.StatusCode, time.Since(fault)}
		}()
	}
	for range n {
		a := <-answers
		assert.Equal(t, http.StatusOK, a.status, "after %v", a.after)
		assert.LessOrEqual(t, a.after, 6*time.Second)
	}
}

// A black hole under an agent that carries a request (a watch): the agent
// finds it too, since the relay pings a busy connection every
// BusyPingAfter, and dials again; GETs sent into the hole are retried on
// the new connection, not on the agent's other dark one, and all are
// answered 200 within 6 s of the fault. (Before: 24 s, half of them 502.)
func TestGETsIntoABlackHoleAreAnsweredWithinSixSeconds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		h := newMemHarness(t, streamer(release), nil, nil) // two connections
		time.Sleep(tunnel.DefaultStableAfter)              // long-lived connections, as in production
		watch, err := h.client().Get(h.url("/watch"))
		require.NoError(t, err)
		defer watch.Body.Close()
		assert.Equal(t, "first", newLineReader(watch.Body).next(t))

		h.net.Freeze("agent")
		intoTheHole(t, h, time.Now(), 20)
	})
}

// A busy connection whose bytes all flow towards the relay (logs -f, a
// watch with events) is pinged every BusyPingAfter anyway, so the agent,
// which judges a busy connection by what it reads, never takes it for
// dark: a minute of a line a second goes through on one connection.
func TestOneWayStreamKeepsItsConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMemHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for i := range 60 {
				fmt.Fprintf(w, "line %d\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(time.Second)
			}
		}), nil, func(c *tunnel.AgentConfig) { c.Connections = 1 })
		resp, err := h.client().Get(h.url("/logs"))
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Equal(t, 60, strings.Count(string(body), "\n"))
		assert.EqualValues(t, 1, h.agent.Stats().ConnectionsOpened, "the agent never dropped its connection")
	})
}

// When only one connection went dark, the agent's other one, idle and
// so silent for a while, answers the ping the retry sends it and takes
// the retry: GETs into the dark connection are answered 200, none later
// than BusyPingAfter+BusyPingTimeout plus a ping's round trip.
func TestRetryTakesAnIdleConnectionThatAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		h := newMemHarness(t, streamer(release), nil, nil) // two connections
		time.Sleep(10 * time.Second)                       // both idle, silent for longer than BusyPingAfter
		h.net.FreezeConn("agent", 0)
		fault := time.Now()
		var answers []int
		for range 4 { // round-robin: some go into the dark connection
			resp, err := h.client().Get(h.url("/get"))
			require.NoError(t, err)
			resp.Body.Close()
			answers = append(answers, resp.StatusCode)
		}
		assert.Equal(t, []int{200, 200, 200, 200}, answers)
		assert.Greater(t, time.Since(fault), tunnel.DefaultBusyPingAfter, "one went into the dark connection")
		assert.LessOrEqual(t, time.Since(fault), tunnel.DefaultBusyPingAfter+tunnel.DefaultBusyPingTimeout+time.Second)
		assert.EqualValues(t, 5, h.relay.Stats().StreamsOpened, "four GETs and one retry")
	})
}

// Over real TCP and TLS, through a proxy that stops passing bytes (and
// closes nothing), the agent finds the connection under its watch dark
// by itself and drops it, as the relay does its side.
func TestAgentFindsABlackHoleOverTCP(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var proxy *cutProxy
	h := newHarness(t, streamer(release), harnessOpts{
		agentCfg:  func(c *tunnel.AgentConfig) { c.Connections = 1 },
		relayAddr: func(relay string) string { proxy = newCutProxy(t, relay); return proxy.addr() },
	})
	resp, err := h.client().Get(h.url("/watch"))
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "first", newLineReader(resp.Body).next(t))
	thaw := proxy.freeze()
	defer thaw()
	start := time.Now()
	require.Eventually(t, func() bool { return h.agent.Stats().ConnectionsClosedBy["lost"] > 0 }, time.Minute, 50*time.Millisecond,
		"the agent kept its dark connection")
	t.Logf("the agent dropped its dark connection %v after the freeze", time.Since(start).Round(10*time.Millisecond))
}
