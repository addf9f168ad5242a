package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
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
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// The same job through the relay hop and directly: clients speaking
// HTTP/1.1 over TLS, small GETs from many clients, then one large download;
// through the hop the request crosses the relay (a child process), the
// tunnel (TLS) and the agent (another child process) whose handler is an
// httputil.ReverseProxy to the upstream. The relay's and the agent's CPU
// time per request is read from /proc.

const (
	smallBody = 64
	largeBody = 256 << 20
)

var upstreamHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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

// startUpstream serves upstreamHandler over TLS (HTTP/1.1 and HTTP/2) and
// writes its CA to dir.
func startUpstream(dir string) (addr, caFile string, stop func(), err error) {
	ca, err := pki.NewCA("loadtest upstream CA")
	if err != nil {
		return "", "", nil, err
	}
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "upstream", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return "", "", nil, err
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		return "", "", nil, err
	}
	caFile = filepath.Join(dir, "upstream-ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		return "", "", nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		return "", "", nil, err
	}
	srv := &http.Server{Handler: upstreamHandler, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().String(), caFile, func() { srv.Close() }, nil
}

// serveAgent is the agent child: one agent of cluster agent-00000 whose
// handler is a reverse proxy to -upstream. It prints READY and serves
// until its parent closes stdin.
func serveAgent(args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	relay := fs.String("relay", "", "")
	caDir := fs.String("ca-dir", "", "")
	upstream := fs.String("upstream", "", "")
	upstreamCA := fs.String("upstream-ca", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pool := func(file string) (*x509.CertPool, error) {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		p := x509.NewCertPool()
		p.AppendCertsFromPEM(b)
		return p, nil
	}
	relayRoots, err := pool(filepath.Join(*caDir, "ca.crt"))
	if err != nil {
		return err
	}
	upRoots, err := pool(*upstreamCA)
	if err != nil {
		return err
	}
	target := &url.URL{Scheme: "https", Host: *upstream}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: upRoots}
	t.ForceAttemptHTTP2 = true
	t.MaxIdleConnsPerHost = 64
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }, Transport: t}
	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
		RelayURL: "https://" + *relay, ClusterID: clusterName(0), Credential: tunnel.SecretCredential(secret),
		Handler: proxy, TLSConfig: &tls.Config{RootCAs: relayRoots},
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil },
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go agent.Run(ctx)
	fmt.Println("READY")
	io.Copy(io.Discard, os.Stdin)
	cancel()
	return nil
}

// startAgentChild starts serveAgent in a child process.
func startAgentChild(relay, caDir, upstream, upstreamCA string) (*exec.Cmd, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(self, "agent", "-relay", relay, "-ca-dir", caDir, "-upstream", upstream, "-upstream-ca", upstreamCA)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	stop := func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() }
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || !strings.HasPrefix(line, "READY") {
		stop()
		return nil, nil, fmt.Errorf("agent child did not start: %q %v", line, err)
	}
	return cmd, stop, nil
}

// cpuTime is a process's user and system CPU time so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // clock ticks: USER_HZ is 100 on Linux
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

// download fetches u once and returns its speed in MB/s.
func download(client *http.Client, u string) (float64, error) {
	start := time.Now()
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

// hop measures the relay hop against direct on the same job.
func hop(o options) error {
	dir, err := os.MkdirTemp("", "loadtest-hop-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	upstream, upstreamCA, stopUpstream, err := startUpstream(dir)
	if err != nil {
		return err
	}
	defer stopUpstream()
	relay, err := startRelay(1, "127.0.0.1:0", dir)
	if err != nil {
		return err
	}
	defer relay.kill()
	agent, stopAgent, err := startAgentChild(relay.addr, dir, upstream, upstreamCA)
	if err != nil {
		return err
	}
	defer stopAgent()
	if _, err := relay.waitConnections(1, 30*time.Second); err != nil {
		return err
	}

	roots := x509.NewCertPool()
	for _, f := range []string{filepath.Join(dir, "ca.crt"), upstreamCA} {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		roots.AppendCertsFromPEM(b)
	}
	// HTTP/1.1 clients, as kubectl's are for many requests, each with
	// connections of its own to reuse.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}}, MaxIdleConnsPerHost: o.hopClients,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
		DialContext:  (&net.Dialer{}).DialContext,
	}}
	direct := "https://" + upstream + "/api/v1/namespaces/default/pods/p"
	tunneled := "https://" + relay.addr + "/clusters/" + clusterName(0) + "/api/v1/namespaces/default/pods/p"
	smallLoad(client, tunneled, o.hopClients, time.Second) // warm both paths' connections
	smallLoad(client, direct, o.hopClients, time.Second)

	fmt.Printf("%d clients × %s of %d-byte GETs, HTTP/1.1 over TLS; %d MiB download\n", o.hopClients, o.duration, smallBody, largeBody>>20)
	type result struct {
		rps, p50, p99 float64
		errs          int64
	}
	measure := func(u string) result {
		lat, errs := smallLoad(client, u, o.hopClients, o.duration)
		return result{float64(len(lat)) / o.duration.Seconds(), pct(lat, 50).Seconds() * 1e3, pct(lat, 99).Seconds() * 1e3, errs}
	}
	d := measure(direct)
	relayCPU, agentCPU := cpuTime(relay.cmd.Process.Pid), cpuTime(agent.Process.Pid)
	tu := measure(tunneled)
	relayCPU, agentCPU = cpuTime(relay.cmd.Process.Pid)-relayCPU, cpuTime(agent.Process.Pid)-agentCPU
	reqs := tu.rps * o.duration.Seconds()
	fmt.Printf("  direct  %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  (%d errors)\n", d.rps, d.p50, d.p99, d.errs)
	fmt.Printf("  tunnel  %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  (%d errors)  = %.2f× direct's req/s, p99 %.1f× direct's\n",
		tu.rps, tu.p50, tu.p99, tu.errs, tu.rps/d.rps, tu.p99/d.p99)
	fmt.Printf("  CPU per tunneled request: relay %.0f µs, agent %.0f µs\n",
		float64(relayCPU.Microseconds())/reqs, float64(agentCPU.Microseconds())/reqs)
	dm, err := download(client, "https://"+upstream+"/large")
	if err != nil {
		return err
	}
	tm, err := download(client, "https://"+relay.addr+"/clusters/"+clusterName(0)+"/large")
	if err != nil {
		return err
	}
	fmt.Printf("  download: direct %.0f MB/s, tunnel %.0f MB/s = %.2f× direct\n", dm, tm, tm/dm)
	return nil
}
