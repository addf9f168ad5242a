package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"

	"github.com/clusterconnect/clusterconnect/internal/h2client"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/tracex"
)

// ServeCluster forwards a client's request under /clusters/{id}/ to that
// cluster's agent, with the prefix removed: GET /clusters/prod/api/v1/pods
// reaches the agent's handler as GET /api/v1/pods. HTTP/1.1 Upgrade
// requests (kubectl exec, attach, port-forward) become raw streams.
func (r *Relay) ServeCluster(w http.ResponseWriter, req *http.Request) {
	r.serveCluster(w, req, false)
}

// serveCluster serves a client's request, or with fromPeer a request
// another replica forwarded.
func (r *Relay) serveCluster(w http.ResponseWriter, req *http.Request, fromPeer bool) {
	id, rest, ok := clusterPath(req.URL.EscapedPath())
	var cr *clientRequest
	var ids []string // the request's ID, as a header value
	if !fromPeer {
		cr = r.newClientRequest(req)
		ids = cr.ids[:]
		w.Header()[httpx.HeaderAuditID] = ids
		if r.cfg.ClientAuthorizer != nil || r.cfg.Middleware != nil || r.cfg.Picker != nil {
			// For them to read (RequestID, EndRequest, NoteCaller).
			req = req.WithContext(context.WithValue(req.Context(), clientRequestKey{}, cr))
		}
		cr.rec.ResponseWriter = w
		w = &cr.rec
		defer r.finish(cr, req, id)
	}
	var tr *relayTrace
	if r.tracer != nil && !fromPeer {
		tr, req = r.startTrace(req, cr, id)
		defer func() { tr.end(cr.rec.Status, cr.caller) }()
	}
	if !ok {
		httpx.WriteStatus(w, req, http.StatusNotFound, "", "tunnel: no such route; clients reach a cluster under /clusters/{cluster-id}/")
		return
	}
	var end *ending
	if !fromPeer {
		authReq := req
		var check trace.Span
		if tr != nil && r.cfg.ClientAuthorizer != nil {
			var ctx context.Context
			ctx, check = tr.child(req.Context(), "front door", trace.SpanKindInternal)
			authReq = req.WithContext(ctx)
		}
		release, ok := r.authorize(w, authReq, id)
		if check != nil {
			check.End()
		}
		if !ok {
			return
		}
		defer release()
		end = &cr.ending
		// The authorizer may end the request later (EndRequest).
		ctx, done := end.arm(req.Context())
		defer done()
		if ctx != req.Context() {
			req = req.WithContext(ctx)
		}
		r.clientsInFlight.Add(1)
		defer r.clientsInFlight.Add(-1)
	}
	if req.Method == http.MethodConnect {
		httpx.WriteStatus(w, req, http.StatusMethodNotAllowed, id, "tunnel: CONNECT is not forwarded")
		return
	}
	upgrade := httpx.IsUpgrade(req.Header)
	if upgrade && req.ProtoMajor != 1 {
		httpx.WriteStatus(w, req, http.StatusBadRequest, id, "tunnel: protocol upgrades need HTTP/1.1")
		return
	}
	if upgrade && httpx.HasBody(req) {
		httpx.Refuse(w, req, http.StatusBadRequest, id, ErrUpgradeBody.Error())
		return
	}
	cw := newClientWriter(w, r.cfg.WriteTimeout, &r.stats.writeTimeouts)
	defer cw.stop()
	if req.ProtoMajor == 1 {
		// A deadline an earlier request left on this kept-alive
		// connection goes; the one set when this request ends bounds
		// net/http's last flush of the answer.
		cw.rc.SetWriteDeadline(time.Time{})
		defer func() { cw.rc.SetWriteDeadline(time.Now().Add(r.cfg.WriteTimeout)) }()
		cw.conn = connOf(req)
	}
	out := outgoing(req, rest)
	if cr != nil {
		out.Header[httpx.HeaderAuditID] = ids
	}
	if agent := req.Header.Get(HeaderToAgent); agent != "" && upgrade {
		out = out.WithContext(context.WithValue(out.Context(), toAgentKey{}, agent))
	}
	if fromPeer && req.Header.Get(headerLiveOnly) != "" && !upgrade {
		out = out.WithContext(context.WithValue(out.Context(), liveOnlyKey{}, true))
	}
	var hop trace.Span
	if tr != nil {
		var ctx context.Context
		ctx, hop = tr.child(out.Context(), "tunnel to the agent", trace.SpanKindClient)
		tracex.Inject(ctx, out.Header) // the client's own do not cross
		out = out.WithContext(ctx)
	}
	resp, upgraded, err := r.forward(id, out, upgrade, fromPeer)
	if hop != nil {
		hop.End()
	}
	if err != nil {
		if end != nil && end.reason() != nil {
			err = end.reason() // ended before its answer began: say why
		}
		writeError(w, req, id, err)
		return
	}
	defer resp.Body.Close()
	var class string
	if cr != nil && (resp.StatusCode == http.StatusSwitchingProtocols || resp.StatusCode == http.StatusOK) {
		if class = httpx.SessionClass(req); class != "" {
			r.began(cr, req, id, class)
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols && upgraded != nil {
		if end != nil {
			end.upgraded(upgraded)
		}
		if cr != nil {
			resp.Header[httpx.HeaderAuditID] = ids
		}
		in, out, how := r.spliceClient(w, id, resp, upgraded)
		if class != "" {
			cr.in, cr.out, cr.end = in, out, r.whyEnded(req, end, how)
		}
		return
	}
	var how copyEnd
	if class != "" {
		defer func() { cr.end = r.whyEnded(req, end, how) }()
	}
	copyResponse(cw, resp, &how)
}

// whyEnded turns how a session's copying ended into the reason it
// ended: the front door's, if it ended the request; the relay's stop;
// or what the copy saw.
func (r *Relay) whyEnded(req *http.Request, end *ending, how copyEnd) string {
	switch {
	case end != nil && end.reason() != nil:
		return endedBy(end.reason())
	case r.reg.closed.Load() && how != copyDone && how != copyClientGone:
		return endRelayStopped
	case how == copyDone:
		return endUpstream
	case how == copyClientGone:
		return endClient
	case how == copyStalled:
		return endStalled
	case req.Context().Err() != nil:
		return endClient // an HTTP/2 client reset its stream
	}
	return endLost
}

// observe counts a client's request once it is answered. The cluster
// label is kept only for answers below 400, which only clusters that
// exist give: refused and unknown IDs must not make series.
func (r *Relay) observe(rec *httpx.Recorder, req *http.Request, id string, start time.Time) {
	if rec.Status >= 400 {
		id = ""
	}
	r.metrics.observe(requestClass(req, httpx.IsUpgrade(req.Header)), rec.Status, id, start)
}

// clientWriter writes a response to a client, failing a write that makes
// no progress within timeout. The clock runs only while a write is under
// way, so a watch may stay quiet for hours: a timer is armed around each
// write and, if it fires, puts the write deadline in the past, which fails
// the write in progress (HTTP/1.x) or resets the stream (HTTP/2). A write
// deadline left armed would do the same to an HTTP/2 stream that is
// merely idle.
//
// Over HTTP/1.x, on a connection from a ClientListener under a server that
// ConfigureServer set up, the TLS records of each write (and flush) leave
// in one system call: a 32 KiB write is two records, and was two writes.
type clientWriter struct {
	stalled atomic.Bool // the write timeout fired
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	timer   *time.Timer
	conn    *clientConn // nil: no batch
}

func newClientWriter(w http.ResponseWriter, timeout time.Duration, timeouts *atomic.Uint64) *clientWriter {
	c := &clientWriter{w: w, rc: http.NewResponseController(w), timeout: timeout}
	c.timer = time.AfterFunc(timeout, func() {
		timeouts.Add(1)
		c.stalled.Store(true)
		c.rc.SetWriteDeadline(time.Now())
	})
	c.timer.Stop()
	return c
}

func (c *clientWriter) Write(p []byte) (int, error) {
	c.timer.Reset(c.timeout)
	c.startBatch()
	n, err := c.w.Write(p)
	err = c.flushBatch(err)
	c.timer.Stop()
	return n, err
}

func (c *clientWriter) Flush() error {
	c.timer.Reset(c.timeout)
	c.startBatch()
	err := c.flushBatch(c.rc.Flush())
	c.timer.Stop()
	return err
}

func (c *clientWriter) startBatch() {
	if c.conn != nil {
		c.conn.batch.start()
	}
}

// flushBatch writes the batch, under the write timeout's timer like the
// write it gathered; err is that write's error, which comes first.
func (c *clientWriter) flushBatch(err error) error {
	if c.conn == nil {
		return err
	}
	if ferr := c.conn.batch.flush(c.conn.writeThrough); err == nil {
		err = ferr
	}
	return err
}

func (c *clientWriter) stop() { c.timer.Stop() }

// roundTripCluster is the one way a request reaches an agent, for
// ServeCluster and RoundTripper alike: an ordinary request as an HTTP/2
// request on one of the cluster's connections, an upgrade (kubectl exec,
// attach, port-forward) replayed as HTTP/1.1 on a raw stream, whose 101
// answer has the stream as its read-write Body.
//
// A relay that is one replica of a fleet sends a request for a cluster it
// holds no connection for to a replica that does, unless the request came
// from a replica (fromPeer).
func (r *Relay) roundTripCluster(id string, out *http.Request, upgrade, fromPeer bool) (*http.Response, error) {
	if holders := r.holders(id, fromPeer, toAgent(out.Context())); len(holders) > 0 {
		if upgrade && out.Body != nil {
			return nil, ErrUpgradeBody
		}
		return r.viaPeer(holders, id, out, upgrade)
	}
	if !upgrade {
		resp, err := r.roundTrip(id, out, fromPeer)
		return resp, peerNotHeld(err, fromPeer)
	}
	if out.Body != nil {
		return nil, ErrUpgradeBody
	}
	stream, err := r.openStream(out.Context(), id, streamUpgrade)
	if err != nil {
		return nil, peerNotHeld(err, fromPeer)
	}
	resp, br, err := sendUpgrade(stream, out, r.cfg.UpgradeTimeout)
	if err != nil {
		stream.abort()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body = &closeBoth{ReadCloser: resp.Body, up: stream}
		return resp, nil
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), out.Header.Get("Upgrade")) {
		stream.abort()
		return nil, fmt.Errorf("tunnel: the agent switched to protocol %q, not the %q the client asked for", resp.Header.Get("Upgrade"), out.Header.Get("Upgrade"))
	}
	resp.Body = keepUpgrade(out.Context(), &upgradedBody{r: br, up: stream})
	return resp, nil
}

// peerNotHeld is err as a replica answers another one: a cluster it holds
// no connection for (the asker's view of the directory was stale: the
// agent left it a moment ago, or the replica restarted) is
// errNoLiveConn, so that the asker goes on to the cluster's other
// holders instead of passing "not connected" to its client.
func peerNotHeld(err error, fromPeer bool) error {
	if fromPeer && errors.Is(err, ErrNotConnected) {
		return errNoLiveConn
	}
	return err
}

// outgoing builds the request sent towards the agent: same method, headers
// without hop-by-hop ones, the path after the cluster prefix.
func outgoing(req *http.Request, escapedPath string) *http.Request {
	u := &url.URL{Scheme: "https", Host: req.Host, RawQuery: req.URL.RawQuery}
	if p, err := url.PathUnescape(escapedPath); err == nil {
		u.Path = p
		if p != escapedPath {
			u.RawPath = escapedPath
		}
	} else {
		u.Path = escapedPath
	}
	if u.Host == "" {
		u.Host = "cluster"
	}
	out := &http.Request{
		Method:        req.Method,
		URL:           u,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        cloneHeader(req.Header),
		Host:          u.Host,
		ContentLength: req.ContentLength,
		Body:          req.Body,
		Trailer:       req.Trailer,
	}
	if !httpx.HasBody(req) {
		out.Body = nil
	}
	return out.WithContext(req.Context())
}

// hopHeaders are the hop-by-hop headers of RFC 9110 §7.6.1 (and the
// non-standard ones seen in the wild). They describe one connection and are
// never forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop deletes hop-by-hop headers, including those the
// Connection header names. With keepUpgrade, Connection: Upgrade and the
// Upgrade header survive, for the raw-stream path that replays the upgrade.
func removeHopByHop(h http.Header, keepUpgrade bool) {
	upgrade := h.Values("Upgrade")
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	for _, name := range hopHeaders {
		h.Del(name)
	}
	if trailers {
		h.Set("Te", "trailers") // gRPC needs it end to end
	}
	if keepUpgrade && len(upgrade) > 0 {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = upgrade
	}
}

func cloneHeader(h http.Header) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	removeHopByHop(out, httpx.IsUpgrade(h))
	removeOwnHeaders(out)
	return out
}

// removeOwnHeaders removes every header of the project's own namespace
// (Clusterconnect-*) a client sent: they are the relay's and the agent's
// to set, and none crosses the relay from outside (HeaderToAgent is read
// before).
func removeOwnHeaders(h http.Header) {
	for k := range h {
		if len(k) > len(ownHeaderPrefix) && strings.EqualFold(k[:len(ownHeaderPrefix)], ownHeaderPrefix) {
			delete(h, k)
		}
	}
}

const ownHeaderPrefix = "Clusterconnect-"

// liveOnlyKey marks, in a request's context, another replica's retry
// (headerLiveOnly).
type liveOnlyKey struct{}

func liveOnly(ctx context.Context) bool {
	v, _ := ctx.Value(liveOnlyKey{}).(bool)
	return v
}

// toAgentKey holds, in an upgrade's context, the agent HeaderToAgent
// named.
type toAgentKey struct{}

func toAgent(ctx context.Context) string {
	a, _ := ctx.Value(toAgentKey{}).(string)
	return a
}

// roundTrip sends a request on one of the cluster's connections, and once
// more under the retry rule (retry.go), as when a connection dies or
// drains at that moment: see retry.
func (r *Relay) roundTrip(id string, out *http.Request, fromPeer bool) (*http.Response, error) {
	fields, err := h2client.RequestFields(out)
	if err != nil {
		return nil, err
	}
	if n := h2client.FieldsSize(fields); n > uint64(r.cfg.MaxHeaderBytes) {
		return nil, fmt.Errorf("%w: %d bytes, over the %d the cluster's agent accepts", ErrHeadersTooLarge, n, r.cfg.MaxHeaderBytes)
	}
	if fromPeer && liveOnly(out.Context()) {
		// Another replica's retry: only a connection heard from lately
		// (or answering a ping within an eighth of RetryWait) may take
		// it, and none here says so soon (errNoLiveConn): the replica
		// asking asks again as often.
		c := r.retryConn(out.Context(), id, nil, r.cfg.RetryWait/8)
		if c == nil {
			return nil, errNoLiveConn
		}
		return r.send(c, out, fields)
	}
	c, known := r.reg.pick(id, nil)
	if c == nil {
		return nil, r.pickError(known)
	}
	a := newAttempt(out)
	resp, err := a.result(r.send(c, out, fields))
	if !a.again(err) {
		return resp, err
	}
	return r.retry(id, out, fields, c, fromPeer, err)
}

// retry sends out once more after an attempt failed with err (on failed,
// one of this replica's connections, or, failed nil, at the replicas
// holding the cluster): on a connection heard from lately (retryConn),
// and in a fleet also at another replica holding the cluster, asked to
// take it only on such a connection of its own (headerLiveOnly), so that
// when an agent's connections go dark its new one serves the retry
// wherever the balancer sent it. Whichever comes first within RetryWait
// takes it. A replica retrying a request another one sent it looks only
// here, briefly, and then says errNoLiveConn: the replica the client
// reached goes on looking.
func (r *Relay) retry(id string, out *http.Request, fields h2client.HeaderList, failed *agentConn, fromPeer bool, err error) (*http.Response, error) {
	if r.reg.picker != nil {
		c, _ := r.reg.pick(id, failed)
		if c == nil {
			return nil, err
		}
		return r.send(c, out, fields)
	}
	wait := r.cfg.RetryWait
	if fromPeer {
		wait /= 4
	}
	askPeers := !fromPeer && r.cfg.Directory != nil
	if fields == nil {
		var ferr error
		if fields, ferr = h2client.RequestFields(out); ferr != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(out.Context())
	found := make(chan *agentConn, 1)
	go func() { found <- r.retryConn(ctx, id, failed, wait) }() // this replica's own connections
	pending := true
	defer func() {
		cancel()
		if pending { // another replica took it: give back what was found here
			go func() {
				if c := <-found; c != nil {
					c.cc.Unreserve()
				}
			}()
		}
	}()
	var tick <-chan time.Time
	if askPeers {
		t := time.NewTicker(r.cfg.RetryWait / 8)
		defer t.Stop()
		tick = t.C
		if resp, ok := r.askHolders(id, out); ok {
			return resp, nil
		}
	}
	for {
		select {
		case c := <-found:
			pending = false
			if c != nil {
				return r.send(c, out, fields)
			}
			if fromPeer {
				return nil, errNoLiveConn
			}
			return nil, err
		case <-tick:
			if resp, ok := r.askHolders(id, out); ok {
				return resp, nil
			}
		}
	}
}

// askHolders offers out to the other replicas holding cluster id, each
// taking it only on a connection heard from lately; ok reports whether
// one did, and resp is its answer.
func (r *Relay) askHolders(id string, out *http.Request) (resp *http.Response, ok bool) {
	for _, peer := range r.cfg.Directory.Holders(id) {
		req := peerRequest(out, id, peer)
		req.Header.Set(headerLiveOnly, "1")
		r.stats.peerForwarded.Add(1)
		resp, err := r.peers.roundTrip(req, peer, false)
		if err == nil {
			err = noLiveConn(resp)
		}
		if err != nil {
			continue
		}
		if resp, err = whole(resp); err == nil {
			return resp, true
		}
	}
	return nil, false
}

// retryConn picks the connection for a retry: not the one the attempt
// failed on, and only one heard from lately. Connections silent for
// BusyPingAfter (on the same dark path, perhaps, or merely idle) are
// pinged, and taken once they answer; a new connection is taken as it
// comes (an agent dials again when its connections go dark). After wait
// with none, there is no retry.
func (r *Relay) retryConn(ctx context.Context, id string, failed *agentConn, wait time.Duration) *agentConn {
	if r.reg.picker != nil {
		c, _ := r.reg.pick(id, failed)
		return c
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	answered := make(chan struct{}, 1)
	probing := false
	for {
		added := r.reg.addedSignal()
		if c := r.reg.pickLive(id, failed, r.cfg.BusyPingAfter); c != nil {
			return c
		}
		if !probing {
			probing = true
			for _, c := range r.reg.silent(id, failed, r.cfg.BusyPingAfter) {
				go func() {
					if c.cc.Probe(wait) {
						select {
						case answered <- struct{}{}:
						default:
						}
					}
				}()
			}
		}
		select {
		case <-added:
		case <-answered:
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// send sends out, whose header list is fields, on c.
func (r *Relay) send(c *agentConn, out *http.Request, fields h2client.HeaderList) (*http.Response, error) {
	r.stats.streamsOpened.Add(1)
	if out.Body != nil {
		out.Body = &countedBody{rc: out.Body, n: &r.stats.bytesTo}
	}
	resp, err := c.cc.RoundTripFields(out, fields)
	if err != nil {
		r.stats.streamsClosed.Add(1)
		if errors.Is(err, h2client.ErrHeadersPeer) {
			// An agent configured with a lower limit than this relay's.
			return nil, fmt.Errorf("%w: the agent of cluster %q accepts less than this relay's %d bytes", ErrHeadersTooLarge, c.clusterID, r.cfg.MaxHeaderBytes)
		}
		return nil, fmt.Errorf("tunnel: the tunnel to cluster %q failed: %w", c.clusterID, err)
	}
	resp.Body = &countedBody{rc: resp.Body, n: &r.stats.bytesFrom, closed: &r.stats.streamsClosed}
	return resp, nil
}

func (r *Relay) pickError(known bool) error {
	if r.reg.closed.Load() {
		return ErrRelayClosed
	}
	if known {
		return ErrBusy
	}
	return ErrNotConnected
}

// countedBody counts the bytes read through it into n and, if closed is
// set, counts its first Close there: a response body's Close ends its
// stream in the stats.
type countedBody struct {
	rc     io.ReadCloser
	n      *atomic.Uint64
	closed *atomic.Uint64
	once   atomic.Bool
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(uint64(n))
	return n, err
}

func (b *countedBody) Close() error {
	if b.closed != nil && b.once.CompareAndSwap(false, true) {
		b.closed.Add(1)
	}
	return b.rc.Close()
}

func writeError(w http.ResponseWriter, req *http.Request, id string, err error) {
	var ae *AccessError
	switch {
	case errors.As(err, &ae):
		if ae.RetryAfter > 0 {
			httpx.RetryAfter(w, ae.RetryAfter)
		}
		httpx.WriteStatus(w, req, ae.Code, "", ae.Message)
	case errors.Is(err, ErrNotConnected):
		// No Retry-After: client-go would retry ten times a second apart
		// before saying anything, and an agent seldom comes back that
		// fast. On the paths client-go reads raw it shows fixed words for
		// a 503 and the relay's text for a 502: kubectl's first discovery
		// request must carry the reason.
		code := http.StatusServiceUnavailable
		if httpx.ReadRaw(req) {
			code = http.StatusBadGateway
		}
		httpx.WriteStatus(w, req, code, id, fmt.Sprintf("cluster %q is not connected to the relay: check that its agent is running and can reach the relay", id))
	case errors.Is(err, errNoLiveConn):
		// Only ever to another replica, which goes on looking.
		w.Header().Set(headerNoLiveConn, "1")
		httpx.WriteStatus(w, req, http.StatusServiceUnavailable, id, fmt.Sprintf("no tunnel connection of cluster %q was heard from lately on this replica", id))
	case errors.Is(err, ErrRelayClosed):
		httpx.RetryAfter(w, time.Second)
		httpx.WriteStatus(w, req, http.StatusServiceUnavailable, id, "the relay is shutting down; retry, and another relay will answer")
	case errors.Is(err, ErrBusy):
		httpx.RetryAfter(w, time.Second)
		httpx.WriteStatus(w, req, http.StatusServiceUnavailable, id, fmt.Sprintf("every tunnel connection of cluster %q is busy or going away; retry", id))
	case errors.Is(err, ErrPeerUnreachable):
		httpx.RetryAfter(w, time.Second)
		httpx.WriteStatus(w, req, http.StatusBadGateway, id, fmt.Sprintf("cluster %q is connected to another relay replica, which cannot be reached now; retry", id))
	case errors.Is(err, ErrAgentTimeout):
		httpx.WriteStatus(w, req, http.StatusGatewayTimeout, id, err.Error())
	case errors.Is(err, ErrHeadersTooLarge):
		httpx.WriteStatus(w, req, http.StatusRequestHeaderFieldsTooLarge, id, err.Error())
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads an answer.
	default:
		httpx.WriteStatus(w, req, http.StatusBadGateway, id, err.Error())
	}
}

// Copy buffers: a stream starts with a small one (a watch may stay open for
// days holding it) and moves to a large one when reads keep filling it, as
// in a download, where fewer and larger writes to the client save syscalls.
// A client that stops reading pins the buffer its copy holds until the
// write deadline, besides the stream's receive window: 32 KiB rather than
// 64 costs a single loopback download 2-17 % and saves 32 MiB per thousand
// stalled clients (BENCHMARKS.md).
var (
	smallBuffers = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}
	largeBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

// copyResponse writes an agent's response to the client. A body of unknown
// length (a watch, logs -f) is flushed after every read, so each event
// reaches the client at once; a body that breaks off aborts the client's
// response instead of ending it as if complete, and so does a client that
// stops reading.
func copyResponse(w *clientWriter, resp *http.Response, how *copyEnd) {
	h := w.w.Header()
	removeHopByHop(resp.Header, false)
	for k, v := range resp.Header {
		h[k] = v
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.w.WriteHeader(resp.StatusCode)
	streaming := resp.ContentLength < 0
	if streaming {
		w.Flush()
	}
	pool := &smallBuffers
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	for {
		buf := *bp
		n, err := resp.Body.Read(buf)
		if n > 0 {
			_, werr := w.Write(buf[:n])
			if werr == nil && streaming {
				werr = w.Flush()
			}
			if werr != nil {
				// The client went away, or stopped reading: abort, so
				// an HTTP/2 client's stream is reset rather than ended.
				*how = copyClientGone
				if w.stalled.Load() {
					*how = copyStalled
				}
				panic(http.ErrAbortHandler)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			*how = copyBroken
			panic(http.ErrAbortHandler)
		}
		if n == len(buf) && pool == &smallBuffers {
			pool.Put(bp)
			pool = &largeBuffers
			bp = pool.Get().(*[]byte)
		}
	}
	*how = copyDone
	for k, v := range resp.Trailer {
		h[http.TrailerPrefix+k] = v
	}
}

// copyEnd is how copying an answer to its client ended.
type copyEnd uint8

const (
	copyBroken     copyEnd = iota // reading the cluster's side failed
	copyDone                      // the cluster's side ended
	copyClientGone                // writing to the client failed
	copyStalled                   // the client stopped reading for WriteTimeout
)
