package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// The identity the floods' real user signs in with, and what the relay
// checks it against.
const (
	floodTenant   = "44444444-4444-4444-8444-444444444444"
	floodAudience = "api://clusterconnect-loadtest"
	floodGroup    = "55555555-5555-4555-8555-555555555555"
	floodCluster  = "agent-00000"
	// lateCluster's agent connects during a connection flood.
	lateCluster = "agent-00001"
)

// floodBench is the real relay binary, with its front door, one agent in
// this process and a signed-in user.
type floodBench struct {
	dir     string
	relay   *exec.Cmd
	addr    string
	agents  string // where agents dial: addr, or -agent-listen's
	metrics string
	roots   *x509.CertPool
	issuer  *oidctest.Issuer
	agent   context.CancelFunc
	user    *http.Client
	token   string
}

func (b *floodBench) close() {
	if b.agent != nil {
		b.agent()
	}
	if b.relay != nil {
		b.relay.Process.Kill()
		b.relay.Wait()
	}
	if b.issuer != nil {
		b.issuer.Close()
	}
	os.RemoveAll(b.dir)
}

// startFloodBench builds the relay binary from this module and starts it
// with the given extra flags; with separateAgents, agents dial an
// -agent-listen address of their own.
func startFloodBench(separateAgents bool, extra ...string) (*floodBench, error) {
	b := &floodBench{}
	var err error
	if b.dir, err = os.MkdirTemp("", "loadtest-floods-"); err != nil {
		return nil, err
	}
	fail := func(err error) (*floodBench, error) { b.close(); return nil, err }
	bin, err := buildRelay(b.dir)
	if err != nil {
		return fail(err)
	}
	if b.issuer, err = oidctest.Start(); err != nil {
		return fail(err)
	}
	ca, err := pki.NewCA("loadtest relay CA")
	if err != nil {
		return fail(err)
	}
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return fail(err)
	}
	b.roots = x509.NewCertPool()
	b.roots.AppendCertsFromPEM(ca.CertPEM())
	files := map[string]string{
		"issuer-ca.crt": string(b.issuer.CA.CertPEM()),
		"agents.json":   `{"clusters":{"` + floodCluster + `":{"secret":"` + secret + `"},"` + lateCluster + `":{"secret":"` + secret + `"}}}`,
		// The user's own rate limit is raised above the load it sends.
		"policy.json": `{"clusters":{"` + floodCluster + `":{"groups":["` + floodGroup + `"]}},"limits":{"callerRate":2000,"callerBurst":2000}}`,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(b.dir, name), []byte(data), 0o600); err != nil {
			return fail(err)
		}
	}
	if err := leaf.WriteFiles(filepath.Join(b.dir, "relay.crt"), filepath.Join(b.dir, "relay.key")); err != nil {
		return fail(err)
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	mport, err := freePort()
	if err != nil {
		return fail(err)
	}
	b.addr, b.metrics = "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:"+strconv.Itoa(mport)
	b.agents = b.addr
	if separateAgents {
		aport, err := freePort()
		if err != nil {
			return fail(err)
		}
		b.agents = "127.0.0.1:" + strconv.Itoa(aport)
		extra = append(extra, "-agent-listen", b.agents)
	}
	args := append([]string{"-listen", b.addr, "-metrics-listen", b.metrics,
		"-cert", filepath.Join(b.dir, "relay.crt"), "-key", filepath.Join(b.dir, "relay.key"),
		"-agents", filepath.Join(b.dir, "agents.json"), "-access-policy", filepath.Join(b.dir, "policy.json"),
		"-tenant", floodTenant, "-audience", floodAudience, "-entra-discovery-base", b.issuer.URL,
		"-issuer-ca", filepath.Join(b.dir, "issuer-ca.crt"), "-log-format", "json"}, extra...)
	b.relay = exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(b.dir, "relay.log"))
	if err != nil {
		return fail(err)
	}
	b.relay.Stdout, b.relay.Stderr = logf, logf
	if err := b.relay.Start(); err != nil {
		return fail(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	b.agent = cancel
	if err := b.startAgent(ctx, floodCluster); err != nil {
		return fail(err)
	}

	if b.token, err = b.issuer.EntraToken(oidctest.EntraClaims{Tenant: floodTenant, Audience: floodAudience,
		UPN: "alice@contoso.com", OID: "oid-alice", Groups: []string{floodGroup}, Expiry: time.Now().Add(time.Hour)}); err != nil {
		return fail(err)
	}
	b.user = &http.Client{Timeout: 30 * time.Second, Transport: bearer{b.token, &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: b.roots}, ForceAttemptHTTP2: true}}}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := b.user.Get(b.url("/ping"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b, nil
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(b.dir, "relay.log"))
			return fail(fmt.Errorf("the relay never served the user: %v; relay log:\n%s", err, log))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startAgent runs an agent for cluster in this process until ctx ends.
func (b *floodBench) startAgent(ctx context.Context, cluster string) error {
	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
		RelayURL: "https://" + b.agents, ClusterID: cluster, Credential: tunnel.SecretCredential(secret),
		Handler: handler(newBroadcaster()), TLSConfig: &tls.Config{RootCAs: b.roots},
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil },
	})
	if err != nil {
		return err
	}
	go agent.Run(ctx)
	return nil
}

func (b *floodBench) url(path string) string {
	return "https://" + b.addr + "/clusters/" + floodCluster + path
}

// bearer adds a token to each request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (t bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.next.RoundTrip(r)
}

// procStats is what /proc says about the relay process.
type procStats struct {
	rss, fds uint64
	cpu      time.Duration
}

func (b *floodBench) stats() procStats {
	s := procStats{rss: rssOf(b.relay.Process.Pid)}
	pid := strconv.Itoa(b.relay.Process.Pid)
	if fds, err := os.ReadDir("/proc/" + pid + "/fd"); err == nil {
		s.fds = uint64(len(fds))
	}
	if st, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil {
		// Fields after the command name, which ends with ')'.
		if i := strings.LastIndexByte(string(st), ')'); i > 0 {
			f := strings.Fields(string(st)[i+1:])
			if len(f) > 13 {
				ut, _ := strconv.ParseUint(f[11], 10, 64)
				stt, _ := strconv.ParseUint(f[12], 10, 64)
				s.cpu = time.Duration(ut+stt) * 10 * time.Millisecond // USER_HZ is 100 on Linux
			}
		}
	}
	return s
}

// peak samples the relay's memory and descriptors until stop is called,
// which returns the highest of each.
func (b *floodBench) peak() func() procStats {
	var (
		mu   sync.Mutex
		high procStats
		done = make(chan struct{})
	)
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s := b.stats()
			mu.Lock()
			high.rss, high.fds, high.cpu = max(high.rss, s.rss), max(high.fds, s.fds), s.cpu
			mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() procStats {
		close(done)
		mu.Lock()
		defer mu.Unlock()
		return high
	}
}

// metric reads one of the relay's metrics.
func (b *floodBench) metric(name string) float64 {
	resp, err := http.Get("http://" + b.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

// userLoad sends the user's requests during a flood and reports them.
func (b *floodBench) userLoad(rate int, d time.Duration) func() string {
	done := make(chan string, 1)
	go func() {
		lat, errs := openLoop(b.user, rate, d, func() string { return b.url("/ping") })
		done <- fmt.Sprintf("user: %d ok, %d errors, p50 %s, p99 %s", len(lat), errs,
			pct(lat, 50).Round(time.Microsecond), pct(lat, 99).Round(time.Microsecond))
	}()
	return func() string { return <-done }
}

func (b *floodBench) dialTLS(proto string) (net.Conn, error) {
	d := &tls.Dialer{Config: &tls.Config{RootCAs: b.roots, NextProtos: []string{proto}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.DialContext(ctx, "tcp", b.addr)
}

// floods runs each unauthenticated flood against the real relay binary
// while a signed-in user sends requests, and reports what the relay held.
func floods(o options) error {
	fmt.Printf("the relay binary with its front door, one agent, a user at %d requests/s\n\n", o.rate)
	runs := []struct {
		name           string
		flags          []string
		run            func(*floodBench, options) (string, error)
		separateAgents bool
	}{
		{"unloaded", nil, func(*floodBench, options) (string, error) { return "", nil }, false},
		{fmt.Sprintf("slow upgrades: %d connections trickling an upgrade body, no token", o.flood), nil, slowUpgrades, false},
		{fmt.Sprintf("headers: %d connections sending a 63 KiB header over 8 s (-max-header-bytes 64 KiB, the default)", o.flood), nil, headerFlood(63<<10, o.flood), false},
		{fmt.Sprintf("headers: %d connections sending a 1,023 KiB header over 8 s (-max-header-bytes 1 MiB)", o.flood/4), []string{"-max-header-bytes", strconv.Itoa(1 << 20)}, headerFlood(1023<<10, o.flood/4), false},
		{"handshakes: 64 callers completing TLS handshakes and hanging up, as fast as they can", nil, handshakeFlood, false},
		{"tokens: 64 callers sending forged tokens (a known key ID, a random signature) as fast as they can", nil, tokenFlood, false},
		{fmt.Sprintf("connections: %d idle TLS connections against -max-client-conns %d", o.flood+o.flood/2, o.flood), []string{"-max-client-conns", strconv.Itoa(o.flood)}, connFlood, false},
		{"connections, and an agent connecting while they hold every place (agents on the clients' address)", []string{"-max-client-conns", strconv.Itoa(o.flood)}, agentDuringConnFlood, false},
		{"connections, and an agent connecting while they hold every place (agents on -agent-listen)", []string{"-max-client-conns", strconv.Itoa(o.flood)}, agentDuringConnFlood, true},
	}
	for _, r := range runs {
		if !strings.Contains(r.name, o.only) {
			continue
		}
		b, err := startFloodBench(r.separateAgents, r.flags...)
		if err != nil {
			return err
		}
		before := b.stats()
		streams := b.metric("clusterconnect_relay_streams_opened_total")
		user := b.userLoad(o.rate, o.duration)
		stop := b.peak()
		what, err := r.run(b, o)
		userLine := user()
		during := stop()
		time.Sleep(time.Second)
		after := b.stats()
		opened := b.metric("clusterconnect_relay_streams_opened_total") - streams
		b.close()
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		fmt.Printf("%s\n  %s\n  relay at its peak: RSS %s, %d descriptors; a second after: RSS %s, %d descriptors; CPU %s; tunnel streams opened %v\n",
			r.name, userLine, kib(during.rss), during.fds, kib(after.rss), after.fds, (after.cpu - before.cpu).Round(10*time.Millisecond), opened)
		if what != "" {
			fmt.Printf("  flood: %s\n", what)
		}
		fmt.Println()
	}
	return nil
}

// slowUpgrades opens o.flood HTTP/1.1 exec upgrades without a token
// whose chunked body trickles a byte a second, the flood that used to hold
// a tunnel stream each.
func slowUpgrades(b *floodBench, o options) (string, error) {
	var answered, stillOpen, dialErrs atomic.Int64
	var wg sync.WaitGroup
	head := "POST /clusters/" + floodCluster + "/api/v1/namespaces/default/pods/web/exec?command=sh HTTP/1.1\r\nHost: relay\r\n" +
		"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n"
	end := time.Now().Add(o.duration)
	tick := time.NewTicker(time.Second / time.Duration(max(o.dialRate, 1)))
	defer tick.Stop()
	for range o.flood {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := b.dialTLS("http/1.1")
			if err != nil {
				dialErrs.Add(1)
				return
			}
			defer c.Close()
			if _, err := io.WriteString(c, head); err != nil {
				return
			}
			go func() { // trickle until the relay closes or the flood ends
				for time.Now().Before(end) {
					time.Sleep(time.Second)
					if _, err := io.WriteString(c, "1\r\nx\r\n"); err != nil {
						return
					}
				}
			}()
			c.SetReadDeadline(end)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				stillOpen.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			answered.Add(1)
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
				return // closed by the relay
			}
			stillOpen.Add(1)
		}()
	}
	wg.Wait()
	return fmt.Sprintf("%d answered at once (401) and closed by the relay, %d still open at the end, %d dial errors", answered.Load(), stillOpen.Load(), dialErrs.Load()), nil
}

// headerFlood opens conns HTTP/1.1 connections that each send a
// request header of size bytes, slowly enough that the last byte comes
// just before the relay's ReadHeaderTimeout (10 s), and reads the answer.
func headerFlood(size, conns int) func(*floodBench, options) (string, error) {
	return func(b *floodBench, o options) (string, error) {
		var sent, answered atomic.Int64
		var codes sync.Map
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / time.Duration(max(o.dialRate, 1)))
		defer tick.Stop()
		pad := strings.Repeat("a", 1<<10)
		for range conns {
			<-tick.C
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := b.dialTLS("http/1.1")
				if err != nil {
					return
				}
				defer c.Close()
				start := time.Now()
				if _, err := io.WriteString(c, "GET /clusters/"+floodCluster+"/api HTTP/1.1\r\nHost: relay\r\nX-Pad: "); err != nil {
					return
				}
				// 1 KiB at a time over 8 s.
				n := size >> 10
				for i := range n {
					if _, err := io.WriteString(c, pad); err != nil {
						break
					}
					if wait := start.Add(8 * time.Second * time.Duration(i+1) / time.Duration(n)); time.Until(wait) > 0 {
						time.Sleep(time.Until(wait))
					}
				}
				sent.Add(1)
				io.WriteString(c, "\r\n\r\n")
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					return
				}
				resp.Body.Close()
				answered.Add(1)
				v, _ := codes.LoadOrStore(resp.StatusCode, new(atomic.Int64))
				v.(*atomic.Int64).Add(1)
			}()
		}
		wg.Wait()
		var cs []string
		codes.Range(func(k, v any) bool { cs = append(cs, fmt.Sprintf("%d×%d", v.(*atomic.Int64).Load(), k)); return true })
		return fmt.Sprintf("%d headers sent whole, %d answered (%s)", sent.Load(), answered.Load(), strings.Join(cs, ", ")), nil
	}
}

// tokenFlood sends requests with forged tokens from 64 callers over
// HTTP/2 for o.duration: each token carries the issuer's real key ID and
// claims and a random signature, so the relay must check a signature for
// every one.
func tokenFlood(b *floodBench, o options) (string, error) {
	parts := strings.Split(b.token, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", err
	}
	var refused, other atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(o.duration)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: b.roots}, ForceAttemptHTTP2: true}}
			forged := make([]byte, len(sig))
			for time.Now().Before(end) {
				rand.Read(forged)
				req, _ := http.NewRequest(http.MethodGet, b.url("/api"), nil)
				req.Header.Set("Authorization", "Bearer "+parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(forged))
				resp, err := c.Do(req)
				if err != nil {
					other.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusUnauthorized {
					refused.Add(1)
				} else {
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return fmt.Sprintf("%d refused with 401 (%.0f/s), %d other answers or errors", refused.Load(), float64(refused.Load())/o.duration.Seconds(), other.Load()), nil
}

// handshakeFlood has 64 callers complete TLS handshakes with the relay
// and hang up, as fast as they can for o.duration: the most a caller can
// make the relay compute without a credential. The callers check no
// certificate and offer X25519 alone, so that each handshake costs them
// as little as it can.
func handshakeFlood(b *floodBench, o options) (string, error) {
	var done, failed atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(o.duration)
	cfg := &tls.Config{InsecureSkipVerify: true, CurvePreferences: []tls.CurveID{tls.X25519}, NextProtos: []string{"h2"}}
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 30 * time.Second}}
			for time.Now().Before(end) {
				c, err := d.Dial("tcp", b.addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.Close()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return fmt.Sprintf("%d handshakes completed (%.0f/s), %d failed", done.Load(), float64(done.Load())/o.duration.Seconds(), failed.Load()), nil
}

// connFlood opens 1.5 × o.flood TLS connections that send nothing
// and keeps them for o.duration.
func connFlood(b *floodBench, o options) (string, error) {
	var open, reset atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(o.duration)
	tick := time.NewTicker(time.Second / time.Duration(max(o.dialRate, 1)))
	defer tick.Stop()
	for range o.flood + o.flood/2 {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := b.dialTLS("h2")
			if err != nil {
				reset.Add(1)
				return
			}
			defer c.Close()
			open.Add(1)
			time.Sleep(time.Until(end))
		}()
	}
	peak := open.Load()
	wg.Wait()
	return fmt.Sprintf("%d connections completed TLS and were held, %d reset or refused at once; relay's count of refusals %v",
		peak, reset.Load(), b.metric("clusterconnect_relay_client_conns_refused_total")), nil
}

// agentDuringConnFlood floods the clients' address as connFlood does and,
// once the relay refuses connections, starts an agent for another
// cluster and times how long it takes to connect.
func agentDuringConnFlood(b *floodBench, o options) (string, error) {
	flood := make(chan string, 1)
	go func() {
		what, _ := connFlood(b, o)
		flood <- what
	}()
	end := time.Now().Add(o.duration)
	for b.metric("clusterconnect_relay_client_conns_refused_total") < 1 {
		if time.Now().After(end) {
			return "", errors.New("the relay never refused a connection: the flood did not fill its places")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	if err := b.startAgent(ctx, lateCluster); err != nil {
		return "", err
	}
	agent := fmt.Sprintf("the agent did not connect while the flood held the places (%v)", time.Until(end).Round(100*time.Millisecond))
	for time.Now().Before(end) {
		if b.metric("clusterconnect_relay_clusters") >= 2 {
			agent = fmt.Sprintf("the agent connected %v after it started", time.Since(start).Round(time.Millisecond))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return agent + "; " + <-flood, nil
}

// buildRelay builds the relay binary of this module into dir.
func buildRelay(dir string) (string, error) {
	bin := filepath.Join(dir, "relay")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/clusterconnect/clusterconnect/examples/relay").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build the relay (run from the repository): %v: %s", err, out)
	}
	return bin, nil
}

// rssOf reads a process's resident set size.
func rssOf(pid int) uint64 {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(st), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
