package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/clusterconnect/clusterconnect/etcddir"
	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// fleetBench is three relay processes (the real binary) sharing a
// directory in a real etcd, and agents in this process.
type fleetBench struct {
	dir      string
	etcd     *kubetest.Etcd
	replicas []*exec.Cmd
	addrs    []string // public addresses
	metrics  []string
	roots    *x509.CertPool
	lb       *roundRobin
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func (b *fleetBench) close() {
	if b.cancel != nil {
		b.cancel()
		b.wg.Wait()
	}
	for _, c := range b.replicas {
		if c != nil && c.Process != nil {
			c.Process.Kill()
			c.Wait()
		}
	}
	if b.lb != nil {
		b.lb.ln.Close()
	}
	if b.etcd != nil {
		b.etcd.Stop()
	}
	os.RemoveAll(b.dir)
}

func startFleetBench(replicas, clusters, etcdMembers, reconnectRate int) (*fleetBench, error) {
	b := &fleetBench{}
	var err error
	if b.dir, err = os.MkdirTemp("", "loadtest-fleet-"); err != nil {
		return nil, err
	}
	fail := func(err error) (*fleetBench, error) { b.close(); return nil, err }
	bin, err := buildRelay(b.dir)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if b.etcd, err = kubetest.StartEtcd(ctx, filepath.Join(b.dir, "etcd"), max(etcdMembers, 1)); err != nil {
		return fail(err)
	}
	serving, err := pki.NewCA("relay CA")
	if err != nil {
		return fail(err)
	}
	peerCA, err := pki.NewCA("fleet peer CA")
	if err != nil {
		return fail(err)
	}
	leaf, err := serving.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return fail(err)
	}
	if err := leaf.WriteFiles(filepath.Join(b.dir, "relay.crt"), filepath.Join(b.dir, "relay.key")); err != nil {
		return fail(err)
	}
	b.roots = x509.NewCertPool()
	b.roots.AppendCertsFromPEM(serving.CertPEM())
	if err := os.WriteFile(filepath.Join(b.dir, "peer-ca.crt"), peerCA.CertPEM(), 0o600); err != nil {
		return fail(err)
	}
	var agents strings.Builder
	agents.WriteString(`{"clusters":{`)
	for i := range clusters {
		if i > 0 {
			agents.WriteString(",")
		}
		fmt.Fprintf(&agents, `"%s":{"secret":"%s"}`, clusterName(i), secret)
	}
	agents.WriteString("}}")
	if err := os.WriteFile(filepath.Join(b.dir, "agents.json"), []byte(agents.String()), 0o600); err != nil {
		return fail(err)
	}
	b.replicas = make([]*exec.Cmd, replicas)
	for i := range replicas {
		pl, err := peerCA.Issue(pki.LeafOptions{CommonName: "replica", Hosts: pki.LoopbackHosts, Server: true, Client: true})
		if err != nil {
			return fail(err)
		}
		cert, key := filepath.Join(b.dir, fmt.Sprintf("peer-%d.crt", i)), filepath.Join(b.dir, fmt.Sprintf("peer-%d.key", i))
		if err := pl.WriteFiles(cert, key); err != nil {
			return fail(err)
		}
		ports := make([]int, 3)
		for j := range ports {
			if ports[j], err = freePort(); err != nil {
				return fail(err)
			}
		}
		addr, metrics, peer := "127.0.0.1:"+strconv.Itoa(ports[0]), "127.0.0.1:"+strconv.Itoa(ports[1]), "127.0.0.1:"+strconv.Itoa(ports[2])
		b.addrs, b.metrics = append(b.addrs, addr), append(b.metrics, metrics)
		b.replicas[i] = exec.Command(bin, "-listen", addr, "-metrics-listen", metrics,
			"-cert", filepath.Join(b.dir, "relay.crt"), "-key", filepath.Join(b.dir, "relay.key"),
			"-agents", filepath.Join(b.dir, "agents.json"), "-insecure-skip-client-auth", "-log-format", "json",
			"-etcd-endpoints", strings.Join(b.etcd.Endpoints(), ","), "-replica-id", fmt.Sprintf("r%d", i),
			"-peer-listen", peer, "-peer-cert", cert, "-peer-key", key, "-peer-ca", filepath.Join(b.dir, "peer-ca.crt"),
			"-max-client-conns", "100000", "-reconnect-rate", strconv.Itoa(reconnectRate))
		logf, err := os.Create(filepath.Join(b.dir, fmt.Sprintf("relay-%d.log", i)))
		if err != nil {
			return fail(err)
		}
		b.replicas[i].Stdout, b.replicas[i].Stderr = logf, logf
		if err := b.replicas[i].Start(); err != nil {
			return fail(err)
		}
	}
	for _, m := range b.metrics {
		if err := waitHTTP("http://"+m+"/healthz", time.Minute); err != nil {
			return fail(err)
		}
	}
	if b.lb, err = newRoundRobin(b.addrs); err != nil {
		return fail(err)
	}
	return b, nil
}

func waitHTTP(u string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// agentConns sums the replicas' live agent connections.
func (b *fleetBench) agentConns() (total int, per []int) {
	for i, m := range b.metrics {
		n := 0
		if b.replicas[i].ProcessState == nil {
			n = int(metricValue("http://"+m+"/metrics", "clusterconnect_relay_tunnel_connections"))
		}
		per = append(per, n)
		total += n
	}
	return total, per
}

// startAgents starts n agents with conns connections each, dialing
// through dial (a replica, or the balancer), dialRate a second; fast,
// they dial again within 2 s, else with the agent's default backoff.
func (b *fleetBench) startAgents(n, conns, dialRate int, fast bool, relay func(i int) string) {
	var minBackoff, maxBackoff time.Duration
	if fast {
		minBackoff, maxBackoff = 200*time.Millisecond, 2*time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	tick := time.NewTicker(time.Second / time.Duration(max(dialRate, 1)))
	defer tick.Stop()
	for i := range n {
		a, err := tunnel.NewAgent(&tunnel.AgentConfig{
			RelayURL: "https://" + relay(i), ClusterID: clusterName(i), Credential: tunnel.SecretCredential(secret),
			Handler: handler(newBroadcaster()), TLSConfig: &tls.Config{RootCAs: b.roots}, Connections: conns,
			Proxy:      func(*http.Request) (*url.URL, error) { return nil, nil },
			MinBackoff: minBackoff, MaxBackoff: maxBackoff, DialContext: agentHandshakes.dial,
		})
		if err != nil {
			panic(err)
		}
		b.wg.Add(1)
		go func() { defer b.wg.Done(); a.Run(ctx) }()
		<-tick.C
	}
}

func (b *fleetBench) waitAgents(want int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		total, per := b.agentConns()
		if total >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d agent connections (per replica %v) after %s", total, want, per, limit)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (b *fleetBench) client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: b.roots}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}}
}

// etcdClient is a client of the bench's etcd, for reading the directory.
func (b *fleetBench) etcdClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: b.etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// fleetScenario measures a fleet of three replicas: the peer hop's
// latency, and what SIGKILLing a replica under load costs.
func fleetScenario(o options) error {
	b, err := startFleetBench(3, o.agents, o.etcdMembers, o.reconnectRate)
	if err != nil {
		return err
	}
	defer b.close()
	start := time.Now()
	b.startAgents(o.agents, 2, o.dialRate, true, func(int) string { return b.lb.addr() })
	if err := b.waitAgents(2*o.agents, 5*time.Minute); err != nil {
		return err
	}
	_, per := b.agentConns()
	fmt.Printf("%d agents × 2 connections over 3 replicas behind a round-robin balancer in %s; per replica %v\n",
		o.agents, time.Since(start).Round(time.Millisecond), per)

	// Where each cluster is held, from the directory.
	cli, err := b.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	holders, spread, err := readHolders(cli)
	if err != nil {
		return err
	}
	fmt.Printf("clusters whose two connections are on two replicas: %d of %d\n", spread, len(holders))

	// The peer hop: the same requests to a replica that holds the cluster
	// and to one that does not.
	c := b.client()
	var held, notHeld []string
	for i := range o.agents {
		hs := holders[clusterName(i)]
		for r := range b.addrs {
			u := "https://" + b.addrs[r] + "/clusters/" + clusterName(i) + "/ping"
			if slices.Contains(hs, fmt.Sprintf("r%d", r)) {
				held = append(held, u)
			} else {
				notHeld = append(notHeld, u)
			}
		}
	}
	if len(notHeld) == 0 {
		return fmt.Errorf("every replica holds every cluster; nothing to forward")
	}
	for round := range 2 { // interleaved: this machine drifts
		lat, errs := openLoop(c, o.rate, o.duration/4, func() string { return held[rand.IntN(len(held))] })
		plat, perrs := openLoop(c, o.rate, o.duration/4, func() string { return notHeld[rand.IntN(len(notHeld))] })
		fmt.Printf("round %d: holding replica p50 %s p99 %s (%d errors); via a peer hop p50 %s p99 %s (%d errors); added p50 %s p99 %s\n", round+1,
			pct(lat, 50).Round(time.Microsecond), pct(lat, 99).Round(time.Microsecond), errs,
			pct(plat, 50).Round(time.Microsecond), pct(plat, 99).Round(time.Microsecond), perrs,
			(pct(plat, 50) - pct(lat, 50)).Round(time.Microsecond), (pct(plat, 99) - pct(lat, 99)).Round(time.Microsecond))
	}

	if err := etcdOutage(b, c, o); err != nil {
		return err
	}

	// SIGKILL replica 0 under load. Clients keep sending to the two that
	// remain (as a balancer with health checks would), to random clusters.
	survivors := b.addrs[1:]
	b.lb.drop(b.addrs[0])
	type result struct {
		at  time.Duration
		err string
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
		stop    atomic.Bool
	)
	var killed time.Time
	var killedSet atomic.Bool
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				u := "https://" + survivors[rand.IntN(len(survivors))] + "/clusters/" + clusterName(rand.IntN(o.agents)) + "/ping"
				msg := tryGet(c, u)
				if killedSet.Load() {
					mu.Lock()
					results = append(results, result{time.Since(killed), msg})
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	killed = time.Now()
	killedSet.Store(true)
	b.replicas[0].Process.Signal(syscall.SIGKILL)
	b.replicas[0].Wait()
	time.Sleep(o.duration)
	stop.Store(true)
	wg.Wait()
	var last time.Duration
	failed, after := 0, 0
	reasons := map[string]int{}
	for _, r := range results {
		if r.err == "" {
			continue
		}
		failed++
		last = max(last, r.at)
		if r.at > 5*time.Second {
			after++
		}
		reasons[trimReason(r.err)]++
	}
	fmt.Printf("replica r0 SIGKILLed under 64 clients: %d GETs in %s after the kill, %d failed, the last %s after the kill; %d failed after 5 s\n",
		len(results), o.duration, failed, last.Round(time.Millisecond), after)
	for r, n := range reasons {
		fmt.Printf("  %d × %s\n", n, r)
	}
	_, per = b.agentConns()
	fmt.Printf("agent connections per replica now: %v\n", per)
	return nil
}

func trimReason(s string) string {
	if i := strings.Index(s, "/clusters/"); i >= 0 {
		if j := strings.Index(s[i:], "\""); j >= 0 {
			s = s[:i] + "…" + s[i+j:]
		}
	}
	return s
}

// readHolders lists the directory: cluster → replica IDs holding it, and
// how many clusters are held by two or more replicas.
func readHolders(cli *clientv3.Client) (map[string][]string, int, error) {
	resp, err := cli.Get(context.Background(), etcddir.DefaultPrefix+"clusters/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, 0, err
	}
	out := map[string][]string{}
	for _, kv := range resp.Kvs {
		rest := strings.TrimPrefix(string(kv.Key), etcddir.DefaultPrefix+"clusters/")
		c, r, _ := strings.Cut(rest, "/")
		out[c] = append(out[c], r)
	}
	spread := 0
	for _, rs := range out {
		if len(rs) >= 2 {
			spread++
		}
	}
	return out, spread, nil
}

// fleetScale connects o.agents agents, one connection each, straight to
// three replicas in turn, and measures etcd writes per agent and what the
// directory costs a replica.
func fleetScale(o options) error {
	b, err := startFleetBench(3, o.agents, o.etcdMembers, o.reconnectRate)
	if err != nil {
		return err
	}
	defer b.close()
	cli, err := b.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	before, err := cli.Get(context.Background(), "/")
	if err != nil {
		return err
	}
	baseRSS := rssOfAll(b.replicas)
	start := time.Now()
	// The agents' own backoff, as a fleet restart meets it.
	b.startAgents(o.agents, 1, o.dialRate, false, func(i int) string { return b.addrs[i%3] })
	if err := b.waitAgents(o.agents, 10*time.Minute); err != nil {
		return err
	}
	fmt.Printf("%d agents connected to 3 replicas in %s\n", o.agents, time.Since(start).Round(time.Millisecond))
	time.Sleep(3 * time.Second) // the last writes land
	after, err := cli.Get(context.Background(), etcddir.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	writes := after.Header.Revision - before.Header.Revision
	fmt.Printf("etcd: %d write revisions for %d agent connects (%.2f per connect), %d keys in the directory\n",
		writes, o.agents, float64(writes)/float64(o.agents), after.Count)

	// The directory's own memory: a view of every entry, built in this
	// process by the same code the relays run.
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	d, err := etcddir.New(&etcddir.Config{Client: cli, ReplicaID: "observer", PeerAddr: "127.0.0.1:1"})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	for {
		if n, _ := d.Clusters(); n >= o.agents {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	clusters, entries := d.Clusters()
	cancel()
	<-done
	per := float64(m1.HeapInuse-m0.HeapInuse) / float64(entries)
	fmt.Printf("directory view: %d clusters, %d entries, %d KiB of heap (%.0f bytes per entry); at 100,000 clusters ≈ %.0f MiB per replica\n",
		clusters, entries, (m1.HeapInuse-m0.HeapInuse)/1024, per, per*100000/(1<<20))
	rss := rssOfAll(b.replicas)
	for i := range rss {
		fmt.Printf("replica r%d: RSS %s with ~%d agents (%s before)\n", i, kib(rss[i]), o.agents/3, kib(baseRSS[i]))
	}
	return fleetRestart(b, cli, o.agents)
}

// directoryEntries counts the directory's cluster entries on the leases
// of replicas in the fleet now (live) and on others (stale: a dead
// replica's, until its lease expires). Keys, as etcddir lays them out:
// <prefix>replicas/<replica> and <prefix>clusters/<cluster>/<replica>,
// each on its replica's lease.
func directoryEntries(cli *clientv3.Client) (live, stale int, err error) {
	resp, err := cli.Get(context.Background(), etcddir.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, 0, err
	}
	leases := map[int64]bool{}
	for _, kv := range resp.Kvs {
		if strings.HasPrefix(string(kv.Key), etcddir.DefaultPrefix+"replicas/") {
			leases[kv.Lease] = true
		}
	}
	for _, kv := range resp.Kvs {
		if !strings.HasPrefix(string(kv.Key), etcddir.DefaultPrefix+"clusters/") {
			continue
		}
		if leases[kv.Lease] {
			live++
		} else {
			stale++
		}
	}
	return live, stale, nil
}

// fleetRestart SIGKILLs every replica at once and starts them again, as
// a fleet whose nodes all went down comes back, and reports how long the
// agents took to come back and the directory to converge (one entry per
// cluster, on a replica holding it: the dead replicas' entries gone with
// their leases) and what that cost etcd in write revisions per agent.
func fleetRestart(b *fleetBench, cli *clientv3.Client, agents int) error {
	before, err := cli.Get(context.Background(), "/")
	if err != nil {
		return err
	}
	for _, c := range b.replicas {
		c.Process.Signal(syscall.SIGKILL)
		c.Wait()
	}
	down := time.Now()
	for i, c := range b.replicas {
		next := exec.Command(c.Path, c.Args[1:]...)
		next.Stdout, next.Stderr = c.Stdout, c.Stderr
		if err := next.Start(); err != nil {
			return err
		}
		b.replicas[i] = next
	}
	for _, m := range b.metrics {
		if err := waitHTTP("http://"+m+"/healthz", time.Minute); err != nil {
			return err
		}
	}
	fmt.Printf("\nall 3 replicas SIGKILLed and started again; serving after %s\n", time.Since(down).Round(time.Millisecond))
	var connected time.Duration
	for {
		total, per := b.agentConns()
		if connected == 0 && total >= agents {
			connected = time.Since(down)
			fmt.Printf("every agent connected again after %s %v\n", connected.Round(time.Millisecond), per)
		}
		live, stale, err := directoryEntries(cli)
		if err != nil {
			return err
		}
		if connected > 0 && live == agents && stale == 0 {
			break
		}
		if time.Since(down) > 10*time.Minute {
			return fmt.Errorf("the directory did not converge in 10 minutes: %d agent connections, %d entries on live leases, %d on dead ones", total, live, stale)
		}
		time.Sleep(500 * time.Millisecond)
	}
	converged := time.Since(down)
	after, err := cli.Get(context.Background(), "/")
	if err != nil {
		return err
	}
	writes := after.Header.Revision - before.Header.Revision
	fmt.Printf("directory converged after %s (one entry per cluster, the old leases' gone): %d etcd write revisions, %.2f per agent\n",
		converged.Round(time.Millisecond), writes, float64(writes)/float64(agents))
	var timeouts int
	for i := range b.replicas {
		log, _ := os.ReadFile(filepath.Join(b.dir, fmt.Sprintf("relay-%d.log", i)))
		timeouts += strings.Count(string(log), "TLS handshake error")
	}
	fmt.Printf("TLS handshake errors in the replicas' logs, both runs: %d\n", timeouts)
	return nil
}

func rssOfAll(cmds []*exec.Cmd) []uint64 {
	var out []uint64
	for _, c := range cmds {
		out = append(out, rssOf(c.Process.Pid))
	}
	return out
}

func metricValue(u, name string) float64 {
	resp, err := http.Get(u)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

// roundRobin is a TCP balancer over the replicas, for agents.
type roundRobin struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []string
	next     int
}

func newRoundRobin(backends []string) (*roundRobin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	lb := &roundRobin{ln: ln, backends: slices.Clone(backends)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			lb.mu.Lock()
			be := lb.backends[lb.next%len(lb.backends)]
			lb.next++
			lb.mu.Unlock()
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", be)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()
	return lb, nil
}

func (lb *roundRobin) addr() string { return lb.ln.Addr().String() }

// drop takes a backend out, as a health check would.
func (lb *roundRobin) drop(be string) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.backends = slices.DeleteFunc(lb.backends, func(x string) bool { return x == be })
}

// etcdOutage takes etcd away (one member of three, or all of a single
// member) for o.etcdDown while clients send GETs through every replica,
// then brings it back and checks that the directory heals: every
// cluster's entries are there again.
func etcdOutage(b *fleetBench, c *http.Client, o options) error {
	var sent, failed atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	reasons := map[string]int{}
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				u := "https://" + b.addrs[rand.IntN(len(b.addrs))] + "/clusters/" + clusterName(rand.IntN(o.agents)) + "/ping"
				msg := tryGet(c, u)
				sent.Add(1)
				if msg != "" {
					failed.Add(1)
					mu.Lock()
					reasons[trimReason(msg)]++
					mu.Unlock()
				}
			}
		}()
	}
	what := "etcd (its only member) stopped"
	if o.etcdMembers >= 3 {
		what = "one etcd member of three SIGKILLed"
	}
	b.etcd.Kill(0)
	time.Sleep(o.etcdDown)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := b.etcd.Restart(ctx, 0); err != nil {
		return err
	}
	back := time.Now()
	stop.Store(true)
	wg.Wait()
	fmt.Printf("%s for %s under 32 clients: %d GETs through all three replicas, %d failed\n", what, o.etcdDown, sent.Load(), failed.Load())
	for r, n := range reasons {
		fmt.Printf("  %d × %s\n", n, r)
	}
	cli, err := b.etcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		holders, _, err := readHolders(cli)
		if err == nil && len(holders) >= o.agents {
			fmt.Printf("directory whole again %s after etcd came back (%d clusters)\n", time.Since(back).Round(time.Millisecond), len(holders))
			return nil
		}
		if time.Since(back) > 2*time.Minute {
			return fmt.Errorf("directory not healed 2 minutes after etcd came back: %d clusters of %d", len(holders), o.agents)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tryGet sends a GET and reads the answer; it returns why it failed, or "".
func tryGet(c *http.Client, u string) string {
	resp, err := c.Get(u)
	if err != nil {
		return err.Error()
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.Status
	}
	return ""
}
