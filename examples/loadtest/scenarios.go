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
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

// setup starts the relay child and n agents, and waits until all are
// connected.
func setup(n, dialRate int, tweak func(*tunnel.AgentConfig)) (*relayProc, *fleet, string, *broadcaster, error) {
	caDir, err := os.MkdirTemp("", "loadtest-")
	if err != nil {
		return nil, nil, "", nil, err
	}
	relay, err := startRelay(n, "127.0.0.1:0", caDir)
	if err != nil {
		return nil, nil, "", nil, err
	}
	b := newBroadcaster()
	start := time.Now()
	f, err := startFleet(n, relay.addr, caDir, handler(b), dialRate, tweak)
	if err != nil {
		relay.kill()
		return nil, nil, "", nil, err
	}
	if _, err := relay.waitConnections(n, 5*time.Minute); err != nil {
		f.stop()
		relay.kill()
		return nil, nil, "", nil, err
	}
	fmt.Printf("%d agents connected in %s\n", n, time.Since(start).Round(time.Millisecond))
	return relay, f, caDir, b, nil
}

func idle(o options) error {
	caDir, err := os.MkdirTemp("", "loadtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(caDir)
	relay, err := startRelay(o.agents, "127.0.0.1:0", caDir)
	if err != nil {
		return err
	}
	defer relay.kill()
	base, err := relay.stats()
	if err != nil {
		return err
	}
	start := time.Now()
	f, err := startFleet(o.agents, relay.addr, caDir, handler(newBroadcaster()), o.dialRate, nil)
	if err != nil {
		return err
	}
	defer f.stop()
	if _, err := relay.waitConnections(o.agents, 5*time.Minute); err != nil {
		return err
	}
	fmt.Printf("%d agents connected in %s\n", o.agents, time.Since(start).Round(time.Millisecond))
	time.Sleep(5 * time.Second) // let handshake garbage go and pings settle
	if o.hold > 0 {
		fmt.Printf("holding for %s; relay profiles at http://%s/debug/pprof/\n", o.hold, relay.statsAddr)
		time.Sleep(o.hold)
	}
	s, err := relay.stats()
	if err != nil {
		return err
	}
	n := float64(o.agents)
	fmt.Printf("\nrelay with %d idle agents (after GC):\n", o.agents)
	fmt.Printf("  %-22s %10s %12s %14s\n", "", "no agents", "all agents", "per agent")
	fmt.Printf("  %-22s %10s %12s %11.1f KiB\n", "resident memory (RSS)", kib(base.RSS), kib(s.RSS), float64(s.RSS-base.RSS)/1024/n)
	fmt.Printf("  %-22s %10s %12s %11.1f KiB\n", "Go heap in use", kib(base.HeapInuse), kib(s.HeapInuse), float64(s.HeapInuse-base.HeapInuse)/1024/n)
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
	relay, f, caDir, b, err := setup(o.agents, o.dialRate, nil)
	if err != nil {
		return err
	}
	defer os.RemoveAll(caDir)
	defer relay.kill()
	defer f.stop()
	c, err := client(caDir)
	if err != nil {
		return err
	}
	// The same handler served directly, for the latency the relay adds.
	direct := httptest.NewUnstartedServer(handler(b))
	direct.EnableHTTP2 = true
	direct.StartTLS()
	defer direct.Close()

	fmt.Printf("\n%d requests/s for %s to random clusters among %d, through the relay:\n", o.rate, o.duration, o.agents)
	lat, errs := openLoop(c, o.rate, o.duration, func() string {
		return "https://" + relay.addr + "/clusters/" + clusterName(rand.IntN(o.agents)) + "/ping"
	})
	report(lat, errs)
	fmt.Printf("\nthe same handler directly (no relay, no tunnel):\n")
	dlat, derrs := openLoop(direct.Client(), o.rate, o.duration/2, func() string { return direct.URL + "/ping" })
	report(dlat, derrs)
	fmt.Printf("\nadded by relay and tunnel: p50 %s, p99 %s\n", (pct(lat, 50) - pct(dlat, 50)).Round(time.Microsecond), (pct(lat, 99) - pct(dlat, 99)).Round(time.Microsecond))
	return nil
}

func watches(o options) error {
	relay, f, caDir, b, err := setup(1, o.dialRate, func(c *tunnel.AgentConfig) {
		c.Connections = o.connections
		c.MaxConcurrentStreams = uint32(o.watches/o.connections + 1000)
	})
	if err != nil {
		return err
	}
	defer os.RemoveAll(caDir)
	defer relay.kill()
	defer f.stop()
	c, err := client(caDir)
	if err != nil {
		return err
	}
	const events = 3
	var got, opened atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for range o.watches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+relay.addr+"/clusters/"+clusterName(0)+"/watch", nil)
			resp, err := c.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			opened.Add(1)
			s := bufio.NewScanner(resp.Body)
			for i := 0; i < events && s.Scan(); i++ {
				got.Add(1)
			}
		}()
	}
	start := time.Now()
	for b.count() < o.watches && time.Since(start) < 3*time.Minute {
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("%d watches open through one agent (%d tunnel connections) after %s\n", b.count(), o.connections, time.Since(start).Round(time.Millisecond))
	s, _ := relay.stats()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	for i := range events {
		b.send("event-" + strconv.Itoa(i))
		time.Sleep(time.Second)
	}
	wg.Wait()
	fmt.Printf("events delivered: %d of %d (%d watches × %d events)\n", got.Load(), int64(o.watches)*events, o.watches, events)
	fmt.Printf("relay: %d goroutines, heap %s, RSS %s\n", s.Goroutines, kib(s.HeapInuse), kib(s.RSS))
	return nil
}

func restart(o options) error {
	caDir, err := os.MkdirTemp("", "loadtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(caDir)
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	relay, err := startRelay(o.agents, addr, caDir)
	if err != nil {
		return err
	}
	f, err := startFleet(o.agents, addr, caDir, handler(newBroadcaster()), o.dialRate, nil)
	if err != nil {
		relay.kill()
		return err
	}
	defer f.stop()
	if _, err := relay.waitConnections(o.agents, 5*time.Minute); err != nil {
		relay.kill()
		return err
	}
	before := f.opened()
	relay.kill()
	down := time.Now()
	relay, err = startRelay(o.agents, addr, caDir)
	if err != nil {
		return err
	}
	defer relay.kill()
	back := make([]time.Duration, o.agents)
	left := o.agents
	for left > 0 && time.Since(down) < 2*time.Minute {
		time.Sleep(50 * time.Millisecond)
		for i, n := range f.opened() {
			if back[i] == 0 && n > before[i] {
				back[i] = time.Since(down)
				left--
			}
		}
	}
	fmt.Printf("\nrelay restarted with %d agents; %d reconnected, the last after %s\n", o.agents, o.agents-left, maxOf(back).Round(time.Millisecond))
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
