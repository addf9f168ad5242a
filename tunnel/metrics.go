package tunnel

import (
	"net/http"
	"strconv"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics. A Relay or an Agent whose config has a Registerer
// registers these there, named clusterconnect_relay_… or
// clusterconnect_agent_…; without one it keeps only its Stats. Counters
// that Stats already keeps are read from it at each scrape, so they cost
// the request path nothing more.

// Request classes, the method label of request metrics: a bounded set,
// where the HTTP method alone would not tell a watch from a get.
const (
	classRead    = "read"    // GET, HEAD, OPTIONS
	classWrite   = "write"   // POST, PUT, PATCH, DELETE
	classWatch   = "watch"   // a GET with watch=true or under /watch/
	classUpgrade = "upgrade" // exec, attach, port-forward
)

// requestClass is the class of a request, for the metrics.
func requestClass(req *http.Request, upgrade bool) string {
	switch {
	case upgrade:
		return classUpgrade
	case req.Method == http.MethodGet && httpx.SessionClass(req) == "watch":
		return classWatch
	case req.Method == http.MethodGet || req.Method == http.MethodHead || req.Method == http.MethodOptions:
		return classRead
	}
	return classWrite
}

// durationBuckets span a cached GET on loopback (~1 ms) to a slow list
// across the internet (tens of seconds).
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// metrics are the request metrics a Relay or Agent observes itself.
// A nil *metrics observes nothing.
type metrics struct {
	requests   *prometheus.CounterVec   // class, code (, cluster)
	duration   *prometheus.HistogramVec // class (, cluster): reads and writes
	sessions   *prometheus.GaugeVec     // class: open now (relay only)
	ended      *prometheus.CounterVec   // class, end (relay only)
	perCluster bool
}

// newMetrics registers side's metrics (relay or agent) with reg: the
// request metrics, and stats read at each scrape.
func newMetrics(reg prometheus.Registerer, side string, perCluster bool, stats func() Stats) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	ns := "clusterconnect_" + side
	labels := []string{"class", "code"}
	durLabels := []string{"class"}
	if perCluster {
		labels = append(labels, "cluster")
		durLabels = append(durLabels, "cluster")
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total",
			Help: "Requests answered, by class (read, write, watch, upgrade) and HTTP status code.",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "request_duration_seconds",
			Help:    "Time to answer reads and writes, until the last byte of the answer (watches and upgrades are not timed).",
			Buckets: durationBuckets,
		}, durLabels),
		perCluster: perCluster,
	}
	cs := []prometheus.Collector{m.requests, m.duration, &statsCollector{ns: ns, stats: stats}}
	if side == "relay" {
		m.sessions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "sessions",
			Help: "Sessions open: long-lived requests whose answer began, by class (watch, follow, exec, attach, portforward, upgrade).",
		}, []string{"class"})
		m.ended = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "sessions_ended_total",
			Help: "Sessions ended, by class and by why (client, upstream, lost, stalled, relay-stopped, revoked, expired, cluster-removed, ended).",
		}, []string{"class", "end"})
		cs = append(cs, m.sessions, m.ended)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe counts one answered request and, for reads and writes, times it.
func (m *metrics) observe(class string, code int, cluster string, start time.Time) {
	if m == nil {
		return
	}
	if code == 0 {
		code = http.StatusOK
	}
	labels := []string{class, strconv.Itoa(code)}
	if m.perCluster {
		labels = append(labels, cluster)
	}
	m.requests.WithLabelValues(labels...).Inc()
	if class == classRead || class == classWrite {
		durLabels := labels[:1]
		if m.perCluster {
			durLabels = []string{class, cluster}
		}
		m.duration.WithLabelValues(durLabels...).Observe(time.Since(start).Seconds())
	}
}

// sessionBegan counts a session open.
func (m *metrics) sessionBegan(class string) {
	if m != nil && m.sessions != nil {
		m.sessions.WithLabelValues(class).Inc()
	}
}

// sessionEnded counts a session's end, and why.
func (m *metrics) sessionEnded(class, end string) {
	if m != nil && m.sessions != nil {
		m.sessions.WithLabelValues(class).Dec()
		m.ended.WithLabelValues(class, end).Inc()
	}
}

// statsCollector reports a Stats snapshot at each scrape.
type statsCollector struct {
	ns    string
	stats func() Stats
}

func (s *statsCollector) desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(s.ns+"_"+name, help, labels, nil)
}

// Describe sends nothing: the set of handshake reasons grows as they
// happen, so the collector is unchecked.
func (s *statsCollector) Describe(chan<- *prometheus.Desc) {}

func (s *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.stats()
	counter := func(name, help string, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(s.desc(name, help, labelNames(labels)...), prometheus.CounterValue, float64(v), labelValues(labels)...)
	}
	gauge := func(name, help string, v uint64) {
		ch <- prometheus.MustNewConstMetric(s.desc(name, help), prometheus.GaugeValue, float64(v))
	}
	counter("tunnel_connections_opened_total", "Tunnel connections established.", st.ConnectionsOpened)
	const closedHelp = "Tunnel connections closed, by reason: peer-closed, network-error, lost (nothing read for the ping timeout), and relay-closed, drained (relay) or shutdown, moved (agent)."
	for reason, n := range st.ConnectionsClosedBy {
		counter("tunnel_connections_closed_total", closedHelp, n, "reason", reason)
	}
	gauge("tunnel_connections", "Tunnel connections open now.", st.ConnectionsOpened-st.ConnectionsClosed)
	counter("streams_opened_total", "Tunnel streams opened: requests and raw streams (upgrades).", st.StreamsOpened)
	counter("streams_closed_total", "Tunnel streams finished.", st.StreamsClosed)
	gauge("streams_in_flight", "Tunnel streams open now: requests in flight, watches, exec and port-forward sessions.", st.StreamsOpened-st.StreamsClosed)
	const bytesHelp = "Body bytes through the tunnel, requests and raw streams alike, by direction: to_agent (requests, stdin) or from_agent (answers, stdout)."
	counter("body_bytes_total", bytesHelp, st.BytesToAgent, "direction", "to_agent")
	counter("body_bytes_total", bytesHelp, st.BytesFromAgent, "direction", "from_agent")
	for reason, n := range st.HandshakeFailures {
		counter("handshakes_refused_total", "Agent handshakes refused, by reason.", n, "reason", reason)
	}
	if s.ns == "clusterconnect_relay" {
		counter("client_requests_refused_total", "Client requests the ClientAuthorizer refused.", st.ClientsRefused)
		counter("peer_forwarded_total", "Requests sent on to the fleet replica that holds the cluster.", st.PeerForwarded)
		counter("peer_unreachable_total", "Attempts to reach another fleet replica that failed.", st.PeerUnreachable)
		counter("client_write_timeouts_total", "Client streams reset because the client stopped reading for the write timeout.", st.WriteTimeouts)
		gauge("clusters", "Clusters with a tunnel connection to this relay now.", uint64(st.Clusters))
		gauge("stream_window_grown_bytes", "Bytes of the window budget that responses in flight hold now: their receive windows toward agents beyond the initial one.", uint64(st.StreamWindowGrown))
	}
}

// labelNames and labelValues split "name", "value", … pairs.
func labelNames(kv []string) []string {
	var out []string
	for i := 0; i < len(kv); i += 2 {
		out = append(out, kv[i])
	}
	return out
}

func labelValues(kv []string) []string {
	var out []string
	for i := 1; i < len(kv); i += 2 {
		out = append(out, kv[i])
	}
	return out
}
