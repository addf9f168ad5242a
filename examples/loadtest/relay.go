package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

const secret = "loadtest-secret"

func clusterName(i int) string { return fmt.Sprintf("agent-%05d", i) }

// relayStats is what the relay child reports about itself, after a GC.
type relayStats struct {
	Connections int    `json:"connections"`
	Goroutines  int    `json:"goroutines"`
	HeapInuse   uint64 `json:"heapInuse"`
	StackInuse  uint64 `json:"stackInuse"`
	RSS         uint64 `json:"rss"`
	// RSSReleased is RSS once the runtime has returned to the kernel
	// all it freed (debug.FreeOSMemory), from releasedStats only: the
	// difference is memory the runtime keeps for reuse, as much as GOGC
	// allows.
	RSSReleased uint64 `json:"rssReleased"`
}

// serveRelay is the child: a relay for clusters agent-00000…, on -listen
// with a CA kept in -ca-dir, and /stats on a loopback port. It prints
// "READY <stats address>" and serves until its parent closes stdin.
func serveRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	n := fs.Int("clusters", 1000, "")
	listen := fs.String("listen", "127.0.0.1:0", "")
	caDir := fs.String("ca-dir", "", "")
	sndbuf := fs.Int("client-send-buffer", 0, "")
	window := fs.Int("stream-window", 0, "")
	limit := fs.Int("stream-window-limit", 0, "")
	budget := fs.Int64("stream-window-budget", 0, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	relay, ln, err := listenRelay(*n, *listen, *caDir, *sndbuf, windows{int32(*window), int32(*limit), *budget})
	if err != nil {
		return err
	}

	statsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // go tool pprof http://<stats address>/debug/pprof/heap
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go http.Serve(statsLn, mux)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		st := relayStats{
			Connections: len(relay.Conns()), Goroutines: runtime.NumGoroutine(), HeapInuse: m.HeapInuse, StackInuse: m.StackInuse, RSS: rss(),
		}
		if r.URL.Query().Has("release") {
			// Asked for only where memory is measured: returning freed
			// memory is a collection more, and would show in the CPU of
			// what polls the stats meanwhile.
			debug.FreeOSMemory()
			st.RSSReleased = rss()
		}
		json.NewEncoder(w).Encode(st)
	}))
	// The hop scenario's plain proxy in the relay's place, started once
	// the agent child says where its own plain proxy is.
	mux.HandleFunc("/front", func(w http.ResponseWriter, r *http.Request) {
		addr, err := startFrontProxy(r.FormValue("target"), *caDir, r.FormValue("h2") != "")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		io.WriteString(w, addr)
	})
	fmt.Printf("READY %s %s\n", ln.Addr(), statsLn.Addr())
	io.Copy(io.Discard, os.Stdin) // until the parent goes away
	return nil
}

// listenRelay serves a relay for clusters agent-00000… over TLS on listen,
// with a CA kept in caDir; sndbuf is its client send buffer and w its
// receive windows toward agents (0 for the defaults). It serves until the
// process ends.
func listenRelay(clusters int, listen, caDir string, sndbuf int, w windows) (*tunnel.Relay, net.Listener, error) {
	handshakes := relay.DefaultMaxHandshakes() // as the relay binary bounds them
	ca, err := pki.LoadOrCreateCA(caDir, "loadtest relay CA", 7*24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return nil, nil, err
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		return nil, nil, err
	}
	secrets := tunnel.SecretAuthenticator{}
	for i := range clusters {
		secrets[clusterName(i)] = secret
	}
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: secrets, MaxReceiveBufferPerStream: w.initial,
		StreamWindowLimit: w.limit, StreamWindowBudget: w.budget})
	if err != nil {
		return nil, nil, err
	}
	tcp, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, nil, err
	}
	ln := tls.NewListener(tunnel.ClientListener(tcp, tunnel.ClientListenerConfig{SendBuffer: sndbuf, MaxHandshakes: handshakes}),
		tunnel.LimitHandshakes(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}))
	srv := &http.Server{Handler: relay, ReadHeaderTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1000, MaxReceiveBufferPerStream: 1 << 20, MaxReceiveBufferPerConnection: 32 << 20, WriteByteTimeout: tunnel.DefaultWriteTimeout}}
	if err := tunnel.ConfigureServer(srv); err != nil {
		return nil, nil, err
	}
	go srv.Serve(ln)
	return relay, ln, nil
}

// rss reads this process's resident set size.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// relayProc is the relay child, seen from the parent.
type relayProc struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	addr      string
	statsAddr string
	done      chan struct{}
}

func startRelay(clusters int, listen, caDir string) (*relayProc, error) {
	cmd, stdin, line, err := startChild("relay", "-clusters", strconv.Itoa(clusters), "-listen", listen, "-ca-dir", caDir,
		"-client-send-buffer", strconv.Itoa(clientSendBuffer), "-stream-window", strconv.Itoa(int(streamWindows.initial)),
		"-stream-window-limit", strconv.Itoa(int(streamWindows.limit)), "-stream-window-budget", strconv.FormatInt(streamWindows.budget, 10))
	if err != nil {
		return nil, err
	}
	p := &relayProc{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	if _, err := fmt.Sscanf(line, "READY %s %s", &p.addr, &p.statsAddr); err != nil {
		p.kill()
		return nil, fmt.Errorf("relay child said %q", line)
	}
	return p, nil
}

// startFrontProxy starts the hop scenario's plain proxy in the relay
// child, forwarding to target (over HTTP/2 with h2), and returns its
// address.
func (p *relayProc) startFrontProxy(target string, h2 bool) (string, error) {
	form := url.Values{"target": {target}}
	if h2 {
		form.Set("h2", "1")
	}
	resp, err := http.PostForm("http://"+p.statsAddr+"/front", form)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("relay child: starting the front proxy: %d %s %v", resp.StatusCode, b, err)
	}
	return string(b), nil
}

// startChild runs this program again with args, as a child process that
// writes its errors to ours, and returns the first line it prints (its
// READY line). The child stops when stdin is closed or it is killed.
func startChild(args ...string) (*exec.Cmd, io.WriteCloser, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, "", err
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, "", err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, "", fmt.Errorf("%s child did not start: %w", args[0], err)
	}
	return cmd, stdin, line, nil
}

func (p *relayProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *relayProc) stats() (relayStats, error) { return p.statsFrom("/") }

// releasedStats is stats with RSSReleased: the relay returns what it
// freed to the kernel first.
func (p *relayProc) releasedStats() (relayStats, error) { return p.statsFrom("/?release") }

func (p *relayProc) statsFrom(path string) (relayStats, error) {
	var s relayStats
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.statsAddr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// waitConnections waits until the relay holds n connections.
func (p *relayProc) waitConnections(n int, limit time.Duration) (relayStats, error) {
	deadline := time.Now().Add(limit)
	for {
		s, err := p.stats()
		if err == nil && s.Connections >= n {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, errors.Join(fmt.Errorf("only %d of %d agents connected within %s", s.Connections, n, limit), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// clientSendBuffer is the relay child's kernel send buffer per client
// connection (-client-send-buffer; 0 for the kernel's autotuning).
var clientSendBuffer int

// windows are the relay's receive windows per stream toward agents: the
// initial one, how far one may grow and the budget for growing (0 for the
// relay's defaults).
type windows struct {
	initial, limit int32
	budget         int64
}

// streamWindows are the relay child's windows (-stream-window,
// -stream-window-limit, -stream-window-budget).
var streamWindows windows
