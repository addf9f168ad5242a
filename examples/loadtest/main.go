// Command loadtest measures what one relay holds: many agents, each with
// its own tunnel connection and cluster ID, in this process, against a
// relay in a child process (so the relay's memory and goroutines are its
// own), all on loopback.
//
//	loadtest idle     -agents 10000            memory and goroutines per idle agent
//	loadtest requests -agents 10000 -rate 1000 latency of requests to random clusters
//	loadtest watches  -watches 10000           concurrent watches through one agent
//	loadtest restart  -agents 1000             reconnect times after a relay restart
//	loadtest stalled  -stalled 1000            clients that stop reading 2.3 MB downloads
//	loadtest floods   -flood 4000              unauthenticated floods against the relay binary
//	loadtest fleet    -agents 300              three relay replicas on etcd: peer hop, a replica SIGKILLed
//	loadtest fleet-scale -agents 10000         etcd writes per agent and directory memory
//	loadtest signin   -runs 30                 the exec plugin's time per kubectl call, cached or not
//	loadtest hop      -clients 32 -duration 4s the relay hop against one HTTP/1.1 proxy hop and direct on the same job
//
// It stops by itself; every loop is bounded in count and time.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadtest idle|requests|watches|restart|stalled|floods|fleet|fleet-scale|signin|hop|relay|agent [flags] (-h for each)")
		os.Exit(2)
	}
	raiseFileLimit()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "relay":
		err = serveRelay(args) // the child process
	case "agent":
		err = serveAgent(args) // the hop scenario's agent child
	case "idle", "requests", "watches", "restart", "stalled", "floods", "fleet", "fleet-scale", "signin", "hop":
		err = scenario(cmd, args)
	default:
		err = fmt.Errorf("unknown scenario %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// options are every scenario's flags.
type options struct {
	agents      int
	rate        int
	duration    time.Duration
	watches     int
	connections int
	dialRate    int
	hold        time.Duration
	stalled     int
	flood       int
	only        string
	etcdMembers int
	etcdDown    time.Duration
	runs        int
	concurrent  int
	hopClients  int
	profileDir  string
	inProcess   bool
	rounds      int
	downloads   int
	upload      bool
	// reconnectRate is each fleet replica's -reconnect-rate.
	reconnectRate int
	clientH2      bool
	// pingInterval is the agents' PingInterval (0: the default).
	pingInterval time.Duration
}

func scenario(name string, args []string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var o options
	fs.IntVar(&o.agents, "agents", 1000, "agents, each with one tunnel connection and its own cluster ID")
	fs.IntVar(&o.rate, "rate", 1000, "requests: requests per second, spread over random clusters")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "requests: how long to send; idle: how long to measure the relay's CPU")
	fs.IntVar(&o.watches, "watches", 10000, "watches: concurrent watches through one agent")
	fs.IntVar(&o.connections, "connections", 4, "watches: that agent's tunnel connections")
	fs.IntVar(&o.dialRate, "dial-rate", 1000, "agents connecting per second at start")
	fs.DurationVar(&o.pingInterval, "ping-interval", 0, "idle: the agents' PingInterval, to measure what their pings cost the relay (0: the default)")
	fs.DurationVar(&o.hold, "hold", 0, "idle: keep the agents connected this long, to profile the relay; restart: this long before the restart")
	fs.IntVar(&o.stalled, "stalled", 1000, "stalled: downloads whose client stops reading, on one tunnel connection")
	fs.IntVar(&o.flood, "flood", 4000, "floods: connections per flood")
	fs.StringVar(&o.only, "only", "", "floods: run only the floods whose description contains this")
	fs.IntVar(&o.etcdMembers, "etcd-members", 1, "fleet: etcd members; with 3, one is killed instead of stopping etcd")
	fs.DurationVar(&o.etcdDown, "etcd-down", 30*time.Second, "fleet: how long etcd (or one member) is down")
	fs.IntVar(&o.runs, "runs", 30, "signin: plugin runs per case")
	fs.IntVar(&o.hopClients, "clients", 32, "hop: concurrent clients")
	fs.IntVar(&o.rounds, "rounds", 4, "hop: turns the three paths take, each -duration/-rounds long, so drift falls on all alike")
	fs.IntVar(&o.reconnectRate, "reconnect-rate", tunnel.DefaultReconnectRate, "fleet, fleet-scale: each replica's -reconnect-rate (agent handshakes a second it can take; here three replicas share the machine's cores)")
	fs.IntVar(&o.downloads, "downloads", 1, "hop: downloads per path, the paths taking turns")
	fs.BoolVar(&o.upload, "upload", false, "hop: the large transfers go up, a POST of the same size the upstream reads and drops, instead of down")
	fs.BoolVar(&o.clientH2, "h2", false, "hop: clients speak HTTP/2, one connection per address as kubectl does, where the server offers it (the plain proxy hop stays HTTP/1.1)")
	fs.BoolFunc("plain-buffer-pool", "hop: the plain proxies reuse their copy buffers, as the agent's side does, instead of allocating 32 KiB for every request", func(string) error {
		return os.Setenv(plainBufferPoolEnv, "1")
	})
	fs.BoolVar(&o.inProcess, "in-process", false, "hop: run relay and agent in this process instead of child processes")
	fs.StringVar(&o.profileDir, "profile", "", "hop: write CPU profiles of the relay and the agent children, over the small requests through the tunnel and over repeated downloads, to this directory (each path then runs in one turn)")
	fs.IntVar(&o.concurrent, "concurrent", 16, "signin: plugin processes started at once on an empty cache")
	agentHandshakes = make(handshakeGate, 4*runtime.GOMAXPROCS(0))
	fs.Func("agent-handshakes", "idle, restart, fleet, fleet-scale: TLS handshakes the load tool's agents compute at once (0: no bound; default 4 per core)", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("not a count: %q", v)
		}
		agentHandshakes = nil
		if n > 0 {
			agentHandshakes = make(handshakeGate, n)
		}
		return nil
	})
	fs.IntVar(&clientSendBuffer, "client-send-buffer", tunnel.DefaultClientSendBuffer, "the relay's kernel send buffer per client connection in bytes (0: the kernel's autotuning)")
	fs.Func("stream-window", "the relay's receive window per stream toward agents in bytes, to begin with (default: the relay's)", int32Flag(&streamWindows.initial))
	fs.Func("stream-window-limit", "how far the relay lets one stream's window grow while its client keeps up (default: the relay's)", int32Flag(&streamWindows.limit))
	fs.Int64Var(&streamWindows.budget, "stream-window-budget", 0, "what all grown windows may hold together beyond their first; negative: windows never grow (0: the relay's default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch name {
	case "idle":
		return idle(o)
	case "requests":
		return requests(o)
	case "watches":
		return watches(o)
	case "stalled":
		return stalled(o)
	case "floods":
		return floods(o)
	case "fleet":
		return fleetScenario(o)
	case "fleet-scale":
		return fleetScale(o)
	case "signin":
		return signIn(o)
	case "hop":
		return hop(o)
	}
	return restart(o)
}

// raiseFileLimit lifts the soft open-file limit to the hard one: every
// agent holds two sockets (its end and, in the child, the relay's).
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// int32Flag parses a flag's value into *p.
func int32Flag(p *int32) func(string) error {
	return func(s string) error {
		n, err := strconv.ParseInt(s, 0, 32)
		*p = int32(n)
		return err
	}
}
