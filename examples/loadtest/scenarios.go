package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// bench is a relay child, its agents, and a client for the relay.
type bench struct {
	relay  *relayProc
	fleet  *fleet
	caDir  string
	events *broadcaster
	client *http.Client
	// connectCPU is what the relay spent while the agents connected:
	// their TLS handshakes and credential checks, and their first pings.
	connectCPU time.Duration
}

func (b *bench) close() {
	if b.fleet != nil {
		b.fleet.stop()
	}
	if b.relay != nil {
		b.relay.kill()
	}
	os.RemoveAll(b.caDir)
}

// setup starts the relay child on listen, then n agents, and waits until
// all are connected. before, if set, runs once the relay is up and before
// any agent dials.
func setup(n int, listen string, dialRate int, tweak func(*tunnel.AgentConfig), before func(*relayProc) error) (*bench, error) {
	b := &bench{events: newBroadcaster()}
	var err error
	if b.caDir, err = os.MkdirTemp("", "loadtest-"); err != nil {
		return nil, err
	}
	if b.relay, err = startRelay(n, listen, b.caDir); err != nil {
		b.close()
		return nil, err
	}
	if before != nil {
		if err := before(b.relay); err != nil {
			b.close()
			return nil, err
		}
	}
	start, was := time.Now(), usageOf(b.relay.cmd.Process.Pid)
	if b.fleet, err = startFleet(n, b.relay.addr, b.caDir, handler(b.events), dialRate, tweak); err != nil {
		b.close()
		return nil, err
	}
	if _, err := b.relay.waitConnections(n, 5*time.Minute); err != nil {
		b.close()
		return nil, err
	}
	b.connectCPU = usageOf(b.relay.cmd.Process.Pid).cpu - was.cpu
	fmt.Printf("%d agents connected in %s; relay CPU %s, %.0f µs per agent (TLS handshake, credential check, first pings)\n",
		n, time.Since(start).Round(time.Millisecond), b.connectCPU, float64(b.connectCPU.Microseconds())/float64(n))
	if b.client, err = client(b.caDir); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func idle(o options) error {
	var base relayStats
	var tweak func(*tunnel.AgentConfig)
	if o.pingInterval > 0 {
		tweak = func(c *tunnel.AgentConfig) { c.PingInterval = o.pingInterval }
	}
	b, err := setup(o.agents, "127.0.0.1:0", o.dialRate, tweak, func(r *relayProc) (err error) {
		base, err = r.releasedStats()
		return err
	})
	if err != nil {
		return err
	}
	defer b.close()
	time.Sleep(5 * time.Second) // let handshake garbage go and pings settle
	if o.hold > 0 {
		fmt.Printf("holding for %s; relay profiles at http://%s/debug/pprof/\n", o.hold, b.relay.statsAddr)
		time.Sleep(o.hold)
	}
	// What keeping them costs the relay: pings, timers, nothing else.
	before := usageOf(b.relay.cmd.Process.Pid)
	time.Sleep(o.duration)
	spent := usageOf(b.relay.cmd.Process.Pid).cpu - before.cpu
	s, err := b.relay.releasedStats()
	if err != nil {
		return err
	}
	n := float64(o.agents)
	fmt.Printf("\nrelay CPU over %s with %d idle agents: %s, %.2f%% of one core; %.2f µs per agent per second\n",
		o.duration, o.agents, spent, 100*spent.Seconds()/o.duration.Seconds(), float64(spent.Microseconds())/n/o.duration.Seconds())
	fmt.Printf("\nrelay with %d idle agents (after GC):\n", o.agents)
	fmt.Printf("  %-22s %10s %12s %14s\n", "", "no agents", "all agents", "per agent")
	fmt.Printf("  %-22s %10s %12s %11.1f KiB\n", "resident memory (RSS)", kib(base.RSS), kib(s.RSS), float64(s.RSS-base.RSS)/1024/n)
	fmt.Printf("  %-22s %10s %12s %11.1f KiB\n", "RSS, freed returned", kib(base.RSSReleased), kib(s.RSSReleased), float64(s.RSSReleased-base.RSSReleased)/1024/n)
	fmt.Printf("  %-22s %10s %12s %11.1f KiB\n", "Go heap in use", kib(base.HeapInuse), kib(s.HeapInuse), float64(s.HeapInuse-base.HeapInuse)/1024/n)
	fmt.Printf("  %-22s %10s %12s %11.1f KiB\n", "goroutine stacks", kib(base.StackInuse), kib(s.StackInuse), float64(s.StackInuse-base.StackInuse)/1024/n)
	fmt.Printf("  %-22s %10d %12d %14.2f\n", "goroutines", base.Goroutines, s.Goroutines, float64(s.Goroutines-base.Goroutines)/n)
	return nil
}

func kib(b uint64) string { return fmt.Sprintf("%d KiB", b/1024) }

// client returns an HTTP/2 client for the relay.
func client(caDir string) (*http.Client, error) {
	caPEM, err := os.ReadFile(filepath.Join(caDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64,
	}}, nil
}

// openLoop sends rate requests a second for d, each to url(i), and returns
// the latencies and the number of errors.
func openLoop(c *http.Client, rate int, d time.Duration, url func() string) ([]time.Duration, int64) {
	var (
		mu      sync.Mutex
		lat     []time.Duration
		errs    atomic.Int64
		wg      sync.WaitGroup
		limiter = make(chan struct{}, 10000) // at most this many in flight
	)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
		limiter <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-limiter; wg.Done() }()
			start := time.Now()
			resp, err := c.Get(url())
			if err != nil {
				errs.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs.Add(1)
				return
			}
			el := time.Since(start)
			mu.Lock()
			lat = append(lat, el)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lat, errs.Load()
}

func requests(o options) error {
	b, err := setup(o.agents, "127.0.0.1:0", o.dialRate, nil, nil)
	if err != nil {
		return err
	}
	defer b.close()
	// The same handler served directly, for the latency the relay adds.
	direct := httptest.NewUnstartedServer(handler(b.events))
	direct.EnableHTTP2 = true
	direct.StartTLS()
	defer direct.Close()

	fmt.Printf("\n%d requests/s for %s to random clusters among %d, through the relay:\n", o.rate, o.duration, o.agents)
	lat, errs := openLoop(b.client, o.rate, o.duration, func() string {
		return "https://" + b.relay.addr + "/clusters/" + clusterName(rand.IntN(o.agents)) + "/ping"
	})
	report(lat, errs)
	fmt.Printf("\nthe same handler directly (no relay, no tunnel):\n")
	dlat, derrs := openLoop(direct.Client(), o.rate, o.duration/2, func() string { return direct.URL + "/ping" })
	report(dlat, derrs)
	fmt.Printf("\nadded by relay and tunnel: p50 %s, p99 %s\n", (pct(lat, 50) - pct(dlat, 50)).Round(time.Microsecond), (pct(lat, 99) - pct(dlat, 99)).Round(time.Microsecond))
	return nil
}

func watches(o options) error {
	b, err := setup(1, "127.0.0.1:0", o.dialRate, func(c *tunnel.AgentConfig) {
		c.Connections = o.connections
		c.MaxConcurrentStreams = uint32(o.watches/o.connections + 1000)
	}, nil)
	if err != nil {
		return err
	}
	defer b.close()
	const events = 3
	var got atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for range o.watches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+b.relay.addr+"/clusters/"+clusterName(0)+"/watch", nil)
			resp, err := b.client.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			s := bufio.NewScanner(resp.Body)
			for i := 0; i < events && s.Scan(); i++ {
				got.Add(1)
			}
		}()
	}
	start := time.Now()
	for b.events.count() < o.watches && time.Since(start) < 3*time.Minute {
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("%d watches open through one agent (%d tunnel connections) after %s\n", b.events.count(), o.connections, time.Since(start).Round(time.Millisecond))
	s, _ := b.relay.stats()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	for i := range events {
		b.events.send("event-" + strconv.Itoa(i))
		time.Sleep(time.Second)
	}
	wg.Wait()
	fmt.Printf("events delivered: %d of %d (%d watches × %d events)\n", got.Load(), int64(o.watches)*events, o.watches, events)
	fmt.Printf("relay: %d goroutines, heap %s, RSS %s\n", s.Goroutines, kib(s.HeapInuse), kib(s.RSS))
	return nil
}

func restart(o options) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port) // the restarted relay takes the same address
	b, err := setup(o.agents, addr, o.dialRate, nil, nil)
	if err != nil {
		return err
	}
	defer b.close()
	if o.hold > 0 {
		// A relay that has run a while, as relays do before they restart:
		// what it tells its agents as it grows has reached them all.
		fmt.Printf("holding for %s before the restart\n", o.hold)
		time.Sleep(o.hold)
	}
	before := b.fleet.opened()
	dialsBefore := agentDials.Load()
	failedBefore, _ := agentFailures.snapshot()
	b.relay.kill()
	down := time.Now()
	if b.relay, err = startRelay(o.agents, addr, b.caDir); err != nil {
		return err
	}
	back := make([]time.Duration, o.agents)
	left := o.agents
	for left > 0 && time.Since(down) < 2*time.Minute {
		time.Sleep(50 * time.Millisecond)
		for i, n := range b.fleet.opened() {
			if back[i] == 0 && n > before[i] {
				back[i] = time.Since(down)
				left--
			}
		}
	}
	dials := agentDials.Load() - dialsBefore
	fmt.Printf("\nrelay restarted with %d agents; %d reconnected, the last after %s; the agents tried %d connections, %d of them in vain:\n",
		o.agents, o.agents-left, maxOf(back).Round(time.Millisecond), dials, dials-int64(o.agents-left))
	failed, last := agentFailures.snapshot()
	for reason, n := range failed {
		if n -= failedBefore[reason]; n > 0 {
			fmt.Printf("  %6d × %s\n", n, reason)
		}
	}
	if last.After(down) {
		fmt.Printf("  the last failure %s after the restart\n", last.Sub(down).Round(time.Millisecond))
	}
	histogram(back)
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// stalled opens downloads of 2.3 MB (the size of /openapi/v2) whose
// clients stop reading, all on one tunnel connection, and measures the
// relay's memory and the latency of other requests on that connection
// before, during and after: the relay's receive window per stream and its
// write timeout towards clients are what bound them.
func stalled(o options) error {
	b, err := setup(1, "127.0.0.1:0", o.dialRate, func(c *tunnel.AgentConfig) {
		c.Connections = 1
		c.MaxConcurrentStreams = uint32(o.stalled + 1000)
	}, nil)
	if err != nil {
		return err
	}
	defer b.close()
	url := "https://" + b.relay.addr + "/clusters/" + clusterName(0)
	measure := func(what string) {
		lat, errs := openLoop(b.client, o.rate, o.duration, func() string { return url + "/ping" })
		s, _ := b.relay.stats()
		fmt.Printf("%s: %d requests, p50 %s, p99 %s, %d errors; relay RSS %s, heap %s, stacks %s, %d goroutines; kernel TCP memory %s\n", what, len(lat),
			pct(lat, 50).Round(time.Microsecond), pct(lat, 99).Round(time.Microsecond), errs, kib(s.RSS), kib(s.HeapInuse), kib(s.StackInuse), s.Goroutines, kib(tcpMemory()))
	}
	measure("unloaded")

	caPEM, err := os.ReadFile(filepath.Join(b.caDir, "ca.crt"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// A remote client's receive buffer is on its own machine; here it
	// would be on the relay's, so the stalled clients keep theirs small
	// and the kernel memory left is the relay's send buffers.
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
		}},
		Config: &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}},
	}
	start := time.Now()
	for range o.stalled {
		c, err := d.Dial("tcp", b.relay.addr)
		if err != nil {
			return err
		}
		// One request, then the client reads nothing more.
		fmt.Fprintf(c, "GET /clusters/%s/openapi/v2 HTTP/1.1\r\nHost: relay\r\n\r\n", clusterName(0))
		conns = append(conns, c)
	}
	time.Sleep(3 * time.Second) // the windows fill
	fmt.Printf("%d stalled downloads opened in %s\n", len(conns), time.Since(start).Round(time.Millisecond))
	measure(fmt.Sprintf("with %d stalled", len(conns)))
	wait := tunnel.DefaultWriteTimeout + 5*time.Second - time.Since(start)
	time.Sleep(wait)
	measure(fmt.Sprintf("after the write timeout (%s)", tunnel.DefaultWriteTimeout))
	return nil
}

// tcpMemory reads the kernel's memory for TCP buffers on this machine, in
// bytes: the relay's send buffers and, on loopback, its clients' receive
// buffers.
func tcpMemory() uint64 {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[0] == "TCP:" && f[i] == "mem" {
				pages, _ := strconv.ParseUint(f[i+1], 10, 64)
				return pages * uint64(os.Getpagesize())
			}
		}
	}
	return 0
}
