package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/http/pprof"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/h2transport"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// The same job through the relay hop, through one plain HTTP/1.1 reverse
// proxy, and directly: clients speaking HTTP/1.1 over TLS, small GETs from
// many clients, then one large download. Through the hop the request
// crosses the relay (a child process), the tunnel (TLS) and the agent
// (another child process) whose handler is an httputil.ReverseProxy to the
// upstream on the project's HTTP/2 client, as package impersonate's is.
// The plain proxy is an httputil.ReverseProxy on net/http's transport,
// served over TLS by the agent child: the cost of one HTTP/1.1 proxy hop,
// for comparison.
// Two plain hops is the same job through a plain ReverseProxy in the
// relay's place (in the relay child) and then the agent child's plain
// proxy, both HTTP/1.1 over TLS: what the tunnel's two hops cost if each
// cost what a plain HTTP/1.1 hop costs. CPU time and system calls per
// request are read from /proc. The same two plain proxies with the leg
// between them one HTTP/2 connection, as the tunnel is one connection
// that all requests share, show what carrying the requests over one
// multiplexed connection costs plain proxies built on net/http.

// plainHops names the path through two plain HTTP/1.1 proxies, and
// plainHopsH2 the one through the same proxies with HTTP/2 between them.
const (
	plainHops   = "2 h1 proxies"
	plainHopsH2 = "2 proxies h2"
)

const (
	smallBody = 64
	largeBody = 256 << 20
)

var upstreamHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/large") && r.Method == http.MethodPost {
		// An upload (-upload): read and dropped.
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil || n != largeBody {
			http.Error(w, fmt.Sprintf("upload: %d bytes, %v", n, err), http.StatusBadRequest)
			return
		}
		io.WriteString(w, "ok")
		return
	}
	if strings.HasSuffix(r.URL.Path, "/large") {
		w.Header().Set("Content-Length", strconv.Itoa(largeBody))
		buf := make([]byte, 256<<10)
		for n := 0; n < largeBody; n += len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, strings.Repeat("x", smallBody))
})

// serveTLS serves h over TLS on a loopback port with a certificate from a
// new CA, whose certificate it writes to caFile.
func serveTLS(h http.Handler, caFile string, protos ...string) (addr string, stop func(), err error) {
	ca, err := pki.NewCA("loadtest " + filepath.Base(caFile))
	if err != nil {
		return "", nil, err
	}
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "loadtest", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return "", nil, err
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		return "", nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: protos})
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}

func certPool(files ...string) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		p.AppendCertsFromPEM(b)
	}
	return p, nil
}

// serveAgent is the agent child: one agent of cluster agent-00000 whose
// handler is a reverse proxy to -upstream, and the same reverse proxy
// served over TLS (HTTP/1.1), with its CA written to -ca-dir. It prints
// "READY <proxy address> <pprof address>" and serves until its parent
// closes stdin.
func serveAgent(args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	relay := fs.String("relay", "", "")
	caDir := fs.String("ca-dir", "", "")
	upstream := fs.String("upstream", "", "")
	upstreamCA := fs.String("upstream-ca", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	proxyAddr, stop, err := startHopAgent(*relay, *caDir, *upstream, *upstreamCA)
	if err != nil {
		return err
	}
	defer stop()
	pprofLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go http.Serve(pprofLn, mux)
	fmt.Println("READY", proxyAddr, pprofLn.Addr())
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// startHopAgent runs an agent of cluster agent-00000 whose handler is a
// reverse proxy to upstream, and serves a plain reverse proxy to upstream
// over TLS (HTTP/1.1) with its CA written to caDir, until stop. Both
// speak HTTP/2 to upstream: the agent's on the project's client, as
// package impersonate does, the plain proxy's on net/http's.
func startHopAgent(relay, caDir, upstream, upstreamCA string) (proxyAddr string, stop func(), err error) {
	relayRoots, err := certPool(filepath.Join(caDir, "ca.crt"))
	if err != nil {
		return "", nil, err
	}
	upRoots, err := certPool(upstreamCA)
	if err != nil {
		return "", nil, err
	}
	target := &url.URL{Scheme: "https", Host: upstream}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: upRoots}
	t.ForceAttemptHTTP2 = true
	t.MaxIdleConnsPerHost = 64
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }, Transport: t, BufferPool: plainBufferPool()}
	// The agent's hop forwards as impersonate does: on the project's
	// HTTP/2 client (h2transport), where the plain proxy uses net/http's,
	// and with a pool of copy buffers, where the plain proxy allocates
	// 32 KiB for every request unless -plain-buffer-pool.
	own := h2transport.New(h2transport.Config{Addr: upstream, TLS: &tls.Config{RootCAs: upRoots}})
	agentProxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }, Transport: own, BufferPool: httpx.Buffers}
	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
		RelayURL: "https://" + relay, ClusterID: clusterName(0), Credential: tunnel.SecretCredential(secret),
		Handler: agentProxy, TLSConfig: &tls.Config{RootCAs: relayRoots},
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil },
	})
	if err != nil {
		return "", nil, err
	}
	proxyAddr, stopProxy, err := serveTLS(proxy, filepath.Join(caDir, "proxy-ca.crt"), "h2", "http/1.1")
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go agent.Run(ctx)
	return proxyAddr, func() { cancel(); stopProxy() }, nil
}

// plainBufferPoolEnv, set by -plain-buffer-pool in the parent and read
// by the children, gives the plain proxies a pool of copy buffers.
const plainBufferPoolEnv = "LOADTEST_PLAIN_BUFFER_POOL"

// plainBufferPool is the plain proxies' BufferPool: none, as a plain
// httputil.ReverseProxy has (a new 32 KiB buffer for every request), or
// with -plain-buffer-pool the one the agent side uses.
func plainBufferPool() httputil.BufferPool {
	if os.Getenv(plainBufferPoolEnv) != "" {
		return httpx.Buffers
	}
	return nil
}

// startFrontProxy serves, over TLS (HTTP/1.1), a plain reverse proxy to
// the agent's plain proxy at target (over TLS, its CA in
// caDir/proxy-ca.crt), with a CA of its own written to caDir/front-ca.crt
// (front-h2-ca.crt with h2). Through it the job crosses two plain proxy
// hops, where through the tunnel it crosses relay and agent. The leg to
// target is HTTP/1.1, a connection per request at a time, or with h2 one
// HTTP/2 connection.
func startFrontProxy(target, caDir string, h2 bool) (addr string, err error) {
	roots, err := certPool(filepath.Join(caDir, "proxy-ca.crt"))
	if err != nil {
		return "", err
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}}
	t.ForceAttemptHTTP2 = false
	t.MaxIdleConnsPerHost = 256
	caFile := "front-ca.crt"
	if h2 {
		t.TLSClientConfig.NextProtos = nil
		t.ForceAttemptHTTP2 = true
		caFile = "front-h2-ca.crt"
	}
	u := &url.URL{Scheme: "https", Host: target}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }, Transport: t, BufferPool: plainBufferPool()}
	addr, _, err = serveTLS(proxy, filepath.Join(caDir, caFile), "http/1.1")
	return addr, err
}

// agentProc is the agent child, seen from the parent.
type agentProc struct {
	cmd       *exec.Cmd
	proxyAddr string
	pprofAddr string
	stop      func()
}

// startAgentChild starts serveAgent in a child process.
func startAgentChild(relay, caDir, upstream, upstreamCA string) (*agentProc, error) {
	cmd, stdin, line, err := startChild("agent", "-relay", relay, "-ca-dir", caDir, "-upstream", upstream, "-upstream-ca", upstreamCA)
	if err != nil {
		return nil, err
	}
	p := &agentProc{cmd: cmd, stop: func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() }}
	if _, err := fmt.Sscanf(line, "READY %s %s", &p.proxyAddr, &p.pprofAddr); err != nil {
		p.stop()
		return nil, fmt.Errorf("agent child said %q", line)
	}
	return p, nil
}

// usage is what a process spent: CPU time and read and write system calls.
type usage struct {
	cpu           time.Duration
	reads, writes int64
}

func usageOf(pid int) usage {
	var u usage
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		// Fields after the command name, which is in parentheses.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) >= 13 {
			utime, _ := strconv.ParseInt(f[11], 10, 64)
			stime, _ := strconv.ParseInt(f[12], 10, 64)
			u.cpu = time.Duration(utime+stime) * time.Second / 100 // clock ticks: USER_HZ is 100 on Linux
		}
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "syscr: "); ok {
				u.reads, _ = strconv.ParseInt(v, 10, 64)
			}
			if v, ok := strings.CutPrefix(line, "syscw: "); ok {
				u.writes, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return u
}

func (u usage) since(before usage) usage {
	return usage{u.cpu - before.cpu, u.reads - before.reads, u.writes - before.writes}
}

func (u usage) add(v usage) usage {
	return usage{u.cpu + v.cpu, u.reads + v.reads, u.writes + v.writes}
}

// perRequest formats u divided over n requests.
func (u usage) perRequest(n float64) string {
	return fmt.Sprintf("%.0f µs CPU, %.1f reads + %.1f writes", float64(u.cpu.Microseconds())/n, float64(u.reads)/n, float64(u.writes)/n)
}

// perMB formats u's CPU time divided over mb megabytes.
func (u usage) perMB(mb float64) string {
	return fmt.Sprintf("%.2f ms CPU, %.0f reads + %.0f writes per MB", float64(u.cpu.Microseconds())/1e3/mb, float64(u.reads)/mb, float64(u.writes)/mb)
}

// costs says what each process spent on one path, each figure formatted
// by f: in process there is only the total; otherwise the children that
// path went through, then the clients and upstream.
func costs(o options, path string, relay, agent, self usage, f func(usage) string) string {
	switch {
	case o.inProcess:
		return "all of it " + f(self)
	case path == "direct":
		return "clients and upstream " + f(self)
	case path == "h1 proxy":
		return "proxy " + f(agent) + "; clients and upstream " + f(self)
	case path == plainHops || path == plainHopsH2:
		return "front proxy " + f(relay) + "; proxy " + f(agent) + "; clients and upstream " + f(self)
	default:
		return "relay " + f(relay) + "; agent " + f(agent) + "; clients and upstream " + f(self)
	}
}

// smallLoad runs clients for d, each sending GETs to u one after another;
// it returns the latencies and errors.
func smallLoad(client *http.Client, u string, clients int, d time.Duration) ([]time.Duration, int64) {
	var mu sync.Mutex
	var lat []time.Duration
	var errs atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(deadline) {
				start := time.Now()
				resp, err := client.Get(u)
				if err != nil {
					errs.Add(1)
					continue
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || n != smallBody {
					errs.Add(1)
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return lat, errs.Load()
}

// profileChildren takes CPU profiles of the relay and the agent child
// for o.duration, into relay<suffix>.pprof and agent<suffix>.pprof in
// o.profileDir; wait on the group for them.
func profileChildren(o options, relay *relayProc, agent *agentProc, suffix string) *sync.WaitGroup {
	var wg sync.WaitGroup
	secs := int(o.duration.Seconds())
	for name, addr := range map[string]string{"relay": relay.statsAddr, "agent": agent.pprofAddr} {
		wg.Go(func() { saveProfile("http://"+addr, secs, filepath.Join(o.profileDir, name+suffix+".pprof")) })
	}
	return &wg
}

// saveProfile writes a CPU profile of secs seconds from a child's pprof
// endpoint to file.
func saveProfile(base string, secs int, file string) {
	resp, err := http.Get(base + "/debug/pprof/profile?seconds=" + strconv.Itoa(secs))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}

// ratios formats rs as a range.
func ratios(rs []float64) string {
	if len(rs) == 1 {
		return fmt.Sprintf("%.2f", rs[0])
	}
	s := slices.Sorted(slices.Values(rs))
	median := s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%.2f–%.2f (median %.2f)", s[0], s[len(s)-1], median)
}

// download fetches u once, or with up sends it as much (-upload), and
// returns the speed in MB/s.
func download(client *http.Client, u string, up bool) (float64, error) {
	start := time.Now()
	if up {
		req, err := http.NewRequest(http.MethodPost, u, io.LimitReader(zeros{}, largeBody))
		if err != nil {
			return 0, err
		}
		req.ContentLength = largeBody
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("upload: %s: %s", resp.Status, answer)
		}
		return float64(largeBody) / 1e6 / time.Since(start).Seconds(), nil
	}
	resp, err := client.Get(u)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != largeBody {
		return 0, fmt.Errorf("download: %d bytes, %v", n, err)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// hop measures the relay hop against one HTTP/1.1 proxy hop and direct,
// on the same job: relay and agent in child processes, or with
// -in-process in this one.
func hop(o options) error {
	if o.inProcess && o.profileDir != "" {
		return errors.New("-profile profiles the child processes; it cannot be used with -in-process")
	}
	if o.profileDir != "" {
		o.rounds = 1 // a profile covers one stretch of time
	}
	if o.rounds < 1 || o.downloads < 1 {
		return errors.New("-rounds and -downloads must be at least 1")
	}
	dir, err := os.MkdirTemp("", "loadtest-hop-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	upstreamCA := filepath.Join(dir, "upstream-ca.crt")
	upstream, stopUpstream, err := serveTLS(upstreamHandler, upstreamCA, "h2", "http/1.1")
	if err != nil {
		return err
	}
	defer stopUpstream()

	var relay *relayProc
	var agent *agentProc
	var relayAddr, proxyAddr, frontAddr, frontH2Addr string
	if o.inProcess {
		r, ln, err := listenRelay(1, "127.0.0.1:0", dir, clientSendBuffer, streamWindows)
		if err != nil {
			return err
		}
		defer ln.Close()
		addr, stopAgent, err := startHopAgent(ln.Addr().String(), dir, upstream, upstreamCA)
		if err != nil {
			return err
		}
		defer stopAgent()
		for deadline := time.Now().Add(30 * time.Second); len(r.Conns()) == 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				return errors.New("the agent did not connect within 30s")
			}
		}
		relayAddr, proxyAddr = ln.Addr().String(), addr
		if frontAddr, err = startFrontProxy(proxyAddr, dir, false); err != nil {
			return err
		}
		if frontH2Addr, err = startFrontProxy(proxyAddr, dir, true); err != nil {
			return err
		}
	} else {
		if relay, err = startRelay(1, "127.0.0.1:0", dir); err != nil {
			return err
		}
		defer relay.kill()
		if agent, err = startAgentChild(relay.addr, dir, upstream, upstreamCA); err != nil {
			return err
		}
		defer agent.stop()
		if _, err := relay.waitConnections(1, 30*time.Second); err != nil {
			return err
		}
		relayAddr, proxyAddr = relay.addr, agent.proxyAddr
		if frontAddr, err = relay.startFrontProxy(proxyAddr, false); err != nil {
			return err
		}
		if frontH2Addr, err = relay.startFrontProxy(proxyAddr, true); err != nil {
			return err
		}
	}
	// usage reads relay's, agent's and this process's use so far (only
	// this process's in process).
	usages := func() (r, a, self usage) {
		if relay != nil {
			r, a = usageOf(relay.cmd.Process.Pid), usageOf(agent.cmd.Process.Pid)
		}
		return r, a, usageOf(os.Getpid())
	}

	roots, err := certPool(filepath.Join(dir, "ca.crt"), upstreamCA, filepath.Join(dir, "proxy-ca.crt"), filepath.Join(dir, "front-ca.crt"), filepath.Join(dir, "front-h2-ca.crt"))
	if err != nil {
		return err
	}
	// HTTP/1.1 clients, each with connections of its own to reuse; or,
	// with -h2, HTTP/2 on one connection per address, as kubectl speaks
	// by default.
	proto := "HTTP/1.1"
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}}, MaxIdleConnsPerHost: o.hopClients,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
		DialContext:  (&net.Dialer{}).DialContext,
	}}
	// The plain proxy hop stays HTTP/1.1 (its server offers HTTP/2 too,
	// for the front proxy's HTTP/2 leg).
	h1Client := client
	if o.clientH2 {
		proto = "HTTP/2"
		client = &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: o.hopClients,
			DialContext: (&net.Dialer{}).DialContext,
		}}
	}
	paths := []struct {
		name, base string
		client     *http.Client
	}{
		{"direct", "https://" + upstream, client},
		{"h1 proxy", "https://" + proxyAddr, h1Client},
		{plainHops, "https://" + frontAddr, client},
		{plainHopsH2, "https://" + frontH2Addr, client},
		{"tunnel", "https://" + relayAddr + "/clusters/" + clusterName(0), client},
	}
	tunnelPath := paths[len(paths)-1].base
	const small = "/api/v1/namespaces/default/pods/p"
	for _, p := range paths {
		smallLoad(p.client, p.base+small, o.hopClients, time.Second) // warm each path's connections
	}

	where := "relay and agent in child processes"
	if o.inProcess {
		where = "everything in this process"
	}
	transfer := "download"
	if o.upload {
		transfer = "upload"
	}
	fmt.Printf("%d clients × %s of %d-byte GETs per path (turns of %s), %s over TLS; %d MiB %s; %s\n", o.hopClients, o.duration, smallBody, o.duration/time.Duration(o.rounds), proto, largeBody>>20, transfer, where)
	// The paths take turns, -rounds times each, so that the machine's
	// drift over the run falls on all of them alike.
	type tally struct {
		lat                []time.Duration
		errs               int64
		relay, agent, self usage
	}
	tallies := make([]tally, len(paths))
	slice := o.duration / time.Duration(o.rounds)
	for range o.rounds {
		for i, p := range paths {
			profiles := new(sync.WaitGroup)
			if o.profileDir != "" && p.name == "tunnel" {
				profiles = profileChildren(o, relay, agent, "")
			}
			relayBefore, agentBefore, selfBefore := usages()
			lat, errs := smallLoad(p.client, p.base+small, o.hopClients, slice)
			relayAfter, agentAfter, selfAfter := usages()
			profiles.Wait()
			t := &tallies[i]
			t.lat, t.errs = append(t.lat, lat...), t.errs+errs
			t.relay, t.agent, t.self = t.relay.add(relayAfter.since(relayBefore)), t.agent.add(agentAfter.since(agentBefore)), t.self.add(selfAfter.since(selfBefore))
		}
	}
	var directRPS, directP99 float64
	for i, p := range paths {
		t := tallies[i]
		n := float64(len(t.lat))
		rps, p50, p99 := n/o.duration.Seconds(), pct(t.lat, 50).Seconds()*1e3, pct(t.lat, 99).Seconds()*1e3
		if p.name == "direct" {
			directRPS, directP99 = rps, p99
		}
		fmt.Printf("  %-12s  %6.0f req/s = %.2f× direct  p50 %5.2f ms  p99 %5.2f ms = %.1f× direct  (%d errors)\n", p.name, rps, rps/directRPS, p50, p99, p99/directP99, t.errs)
		fmt.Printf("                per request: %s\n", costs(o, p.name, t.relay, t.agent, t.self, func(u usage) string { return u.perRequest(n) }))
	}
	if relay != nil {
		// The goal's ratios for small requests: each side's CPU per
		// request against the plain proxy in its place, and the rate.
		tun := tallies[len(paths)-1]
		perReq := func(t tally, u usage) float64 { return float64(u.cpu) / float64(len(t.lat)) }
		for i, p := range paths {
			if p.name != plainHops && p.name != plainHopsH2 {
				continue
			}
			plain := tallies[i]
			fmt.Printf("  small requests, tunnel against %s: relay CPU per request %.2f× the front proxy's, agent %.2f× the plain proxy's, rate %.2f×\n",
				p.name, perReq(tun, tun.relay)/perReq(plain, plain.relay), perReq(tun, tun.agent)/perReq(plain, plain.agent), float64(len(tun.lat))/float64(len(plain.lat)))
		}
	}
	// Downloads take turns too, -downloads times each; the goal's ratios
	// (relay against the front proxy and agent against the plain proxy
	// per MB, the tunnel's rate against the two plain hops') are taken
	// within each turn.
	type dl struct {
		mbs                float64
		relay, agent, self usage
	}
	dls := make([][]dl, len(paths))
	mb := float64(largeBody) / 1e6
	for turn := range o.downloads {
		for i, p := range paths {
			relayBefore, agentBefore, selfBefore := usages()
			mbs, err := download(p.client, p.base+"/large", o.upload)
			if err != nil {
				return err
			}
			relayAfter, agentAfter, selfAfter := usages()
			d := dl{mbs, relayAfter.since(relayBefore), agentAfter.since(agentBefore), selfAfter.since(selfBefore)}
			dls[i] = append(dls[i], d)
			// CPU per MB shows whether a path is bound by work or by
			// waiting: a path whose processes together use less than
			// both cores waits.
			fmt.Printf("  %s %-12s %5.0f MB/s = %.2f× direct; %s\n", transfer, p.name, mbs, mbs/dls[0][turn].mbs,
				costs(o, p.name, d.relay, d.agent, d.self, func(u usage) string { return u.perMB(mb) }))
		}
	}
	if relay != nil {
		tun := len(paths) - 1
		for plain := range paths {
			if name := paths[plain].name; name != plainHops && name != plainHopsH2 {
				continue
			}
			var relayR, agentR, rateR, wholeR []float64
			for t := range o.downloads {
				tn, pl := dls[tun][t], dls[plain][t]
				relayR = append(relayR, float64(tn.relay.cpu)/float64(pl.relay.cpu))
				agentR = append(agentR, float64(tn.agent.cpu)/float64(pl.agent.cpu))
				rateR = append(rateR, tn.mbs/pl.mbs)
				wholeR = append(wholeR, float64(tn.relay.cpu+tn.agent.cpu+tn.self.cpu)/float64(pl.relay.cpu+pl.agent.cpu+pl.self.cpu))
			}
			fmt.Printf("  %ss, tunnel against %s, turn by turn: relay CPU per MB %s× the front proxy's, agent %s× the plain proxy's, rate %s×\n",
				transfer, paths[plain].name, ratios(relayR), ratios(agentR), ratios(rateR))
			// On one machine a loopback transmit runs the receiver's half
			// of the delivery in the sender's system call, and which side
			// pays for the sender's transmits depends on which end of a
			// pipe is the slower (BENCHMARKS.md, "who pays for a loopback
			// transmit"); every process together is what the two
			// arrangements cost.
			fmt.Printf("  %ss, tunnel against %s, turn by turn: every process's CPU per MB %s×\n", transfer, paths[plain].name, ratios(wholeR))
		}
	}
	if o.profileDir != "" {
		// Downloads through the tunnel, one after another, while both
		// children are profiled; then the same through the two plain
		// proxies, which run in the same children, to compare with.
		for _, p := range []struct{ base, suffix string }{{tunnelPath, "-download"}, {"https://" + frontAddr, "-download-plain"}, {"https://" + frontH2Addr, "-download-plain-h2"}} {
			profiles := profileChildren(o, relay, agent, p.suffix)
			for end := time.Now().Add(o.duration); time.Now().Before(end); {
				if _, err := download(client, p.base+"/large", o.upload); err != nil {
					return err
				}
			}
			profiles.Wait()
		}
	}
	return nil
}
