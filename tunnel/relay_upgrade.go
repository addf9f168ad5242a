package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// openStream opens a CONNECT stream on one of the cluster's connections and
// waits for the agent to accept it.
func (r *Relay) openStream(ctx context.Context, id, kind string) (*relayStream, error) {
	var c *agentConn
	var known bool
	if agent := toAgent(ctx); agent != "" {
		c, known = r.reg.pickAgent(id, agent)
	} else {
		c, known = r.reg.pick(id, nil)
	}
	if c == nil {
		return nil, r.pickError(known)
	}
	pr, pw := io.Pipe()
	// The stream outlives ctx; Close (or a failure here) cancels it.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: "tunnel.invalid"},
		Host:          "tunnel.invalid",
		Header:        http.Header{headerStreamKind: {kind}},
		Body:          pr,
		ContentLength: -1,
	}).WithContext(sctx)
	stop := context.AfterFunc(ctx, cancel)
	r.stats.streamsOpened.Add(1)
	resp, err := c.cc.RoundTrip(req)
	fail := func(err error) (*relayStream, error) {
		cancel()
		pw.Close()
		r.stats.streamsClosed.Add(1)
		return nil, err
	}
	if !stop() {
		if err == nil {
			resp.Body.Close()
		}
		return fail(ctx.Err())
	}
	if err != nil {
		return fail(fmt.Errorf("tunnel: opening a stream to cluster %q: %w", id, err))
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return fail(fmt.Errorf("tunnel: the agent of cluster %q refused a stream: %s: %s", id, resp.Status, msg))
	}
	var once sync.Once
	return newRelayStream(resp.Body, pw, cancel, id, &r.stats, func() {
		once.Do(func() { r.stats.streamsClosed.Add(1) })
	}), nil
}

// spliceClient takes over the client's connection after the agent's
// 101 and copies bytes both ways until both sides are done: the client's
// to up, the cluster's read through resp.Body (up's reader, or
// Middleware's wrapper around it).
//
// While it runs, Close can end it (upstreams); toClients counts the
// splices whose cluster-to-client direction is still copying, which
// Close waits a moment for, so that the last words an ending session's
// Middleware gives it reach the client.
func (r *Relay) spliceClient(w http.ResponseWriter, id string, resp *http.Response, up *upgradedBody) (in, out int64, how copyEnd) {
	writeTimeout, toClient := r.cfg.WriteTimeout, &r.toClients
	var fromCluster io.Reader = resp.Body
	if resp.Body == io.ReadCloser(up) {
		fromCluster = up.r
	}
	conn, cbuf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		httpx.WriteStatus(w, nil, http.StatusInternalServerError, id, "tunnel: the relay's server cannot hijack connections")
		return 0, 0, copyBroken
	}
	defer conn.Close()
	if err := writeSwitch(cbuf.Writer, resp); err != nil {
		return 0, 0, copyClientGone
	}
	up.stopped = &r.reg.closed
	if !r.upstreams.add(up.up) {
		up.up.abort() // Close has run
	}
	defer r.upstreams.remove(up.up)
	var toCluster rawUpstream = up.up
	if w, ok := resp.Body.(io.Writer); ok && resp.Body != io.ReadCloser(up) {
		toCluster = throughBody{rawUpstream: up.up, w: w}
	}
	toClient.Add(1)
	return splice(&bufferedConn{Conn: conn, r: cbuf.Reader}, &timedConn{Conn: conn, timeout: writeTimeout}, toCluster, &countedEnd{r: fromCluster, n: toClient})
}

// throughBody is the cluster side of an upgrade whose Body Middleware
// wrapped: the client's bytes, and its half-close where the wrapper takes
// one, go through the wrapper, which may follow them (package sessions
// follows a port-forward's streams so).
type throughBody struct {
	rawUpstream
	w io.Writer
}

func (t throughBody) Write(p []byte) (int, error) { return t.w.Write(p) }

func (t throughBody) CloseWrite() error {
	if cw, ok := t.w.(closeWriter); ok {
		if err := cw.CloseWrite(); !errors.Is(err, errors.ErrUnsupported) {
			return err
		}
	}
	return t.rawUpstream.CloseWrite()
}

// timedConn is a client's connection whose writes must make progress
// within timeout (renewed at most every half timeout, as clientWriter): a
// client that stops reading an exec's output or a port-forward does not
// hold its stream's window and buffers for ever.
type timedConn struct {
	net.Conn
	timeout  time.Duration
	deadline time.Time
}

func (c *timedConn) Write(p []byte) (int, error) {
	now := time.Now()
	if c.deadline.Sub(now) < c.timeout/2 {
		c.deadline = now.Add(c.timeout)
		c.Conn.SetWriteDeadline(c.deadline)
	}
	return c.Conn.Write(p)
}

func (c *timedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// sendUpgrade writes the request on the stream and reads the answer, which
// must begin within timeout: a stream is a share of the cluster's
// connections, not to be held by an agent or a client that says nothing.
// The request carries no body (see ErrUpgradeBody), so nothing the client
// sends can hold the stream before the agent has answered.
func sendUpgrade(stream *relayStream, out *http.Request, timeout time.Duration) (*http.Response, *bufio.Reader, error) {
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // Request.Write would add Go's own
	}
	stream.SetDeadline(time.Now().Add(timeout))
	bw := bufio.NewWriter(stream)
	if err := out.Write(bw); err != nil {
		return nil, nil, fmt.Errorf("tunnel: sending the upgrade request: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return nil, nil, fmt.Errorf("tunnel: sending the upgrade request: %w", err)
	}
	br := bufio.NewReader(stream)
	resp, err := http.ReadResponse(br, out)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, nil, fmt.Errorf("%w: no answer to an upgrade within %v", ErrAgentTimeout, timeout)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("tunnel: reading the agent's answer to an upgrade: %w", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The bytes that follow flow as long as both ends like; a
		// refusal's body still has to come within timeout.
		stream.SetDeadline(time.Time{})
	}
	return resp, br, nil
}

func writeSwitch(w *bufio.Writer, resp *http.Response) error {
	fmt.Fprintf(w, "HTTP/1.1 %s\r\n", resp.Status)
	if err := resp.Header.Write(w); err != nil {
		return err
	}
	w.WriteString("\r\n")
	return w.Flush()
}

type closeWriter interface{ CloseWrite() error }

// upstreamSet holds the cluster ends of clients' upgrades in progress.
type upstreamSet struct {
	mu     sync.Mutex
	set    map[rawUpstream]struct{}
	closed bool
}

// add holds u, unless the set was closed.
func (s *upstreamSet) add(u rawUpstream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.set == nil {
		s.set = map[rawUpstream]struct{}{}
	}
	s.set[u] = struct{}{}
	return true
}

func (s *upstreamSet) remove(u rawUpstream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.set, u)
}

// close aborts every upstream held and refuses later ones.
func (s *upstreamSet) close() {
	s.mu.Lock()
	s.closed = true
	all := s.set
	s.set = nil
	s.mu.Unlock()
	for u := range all {
		u.abort()
	}
}

// countedEnd is a reader that takes one from n when it ends.
type countedEnd struct {
	r    io.Reader
	n    *atomic.Int32
	once sync.Once
}

func (c *countedEnd) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil {
		c.once.Do(func() { c.n.Add(-1) })
	}
	return n, err
}

// splice copies client→stream and stream→client. The end of one direction
// is passed on as a half-close, so a client that closes its sending side
// (stdin EOF) still gets the rest of the output; when both directions are
// done, or either fails, both close. It returns the bytes copied each way
// and how the direction that ended first ended.
func splice(clientR io.Reader, client net.Conn, stream rawUpstream, streamR io.Reader) (in, out int64, how copyEnd) {
	var wg sync.WaitGroup
	wg.Add(2)
	fail := func() { client.Close(); stream.abort() }
	var first sync.Once
	ended := func(h copyEnd) { first.Do(func() { how = h }) }
	go func() {
		defer wg.Done()
		src := &readErr{r: clientR}
		var err error
		in, err = io.Copy(stream, src)
		switch {
		case err == nil:
			ended(copyClientGone)
			stream.CloseWrite()
		case src.err != nil:
			ended(copyClientGone)
			fail()
		default:
			// The stream takes no more: the agent ended its answer (a
			// command that exited while the client still sent), reset
			// it, or the connection broke. Reading the stream, which
			// ends in each case, tells which.
		}
	}()
	go func() {
		defer wg.Done()
		src := &readErr{r: streamR}
		var err error
		out, err = io.Copy(client, src)
		switch {
		case err == nil:
			ended(copyDone)
		case src.err != nil:
			ended(copyBroken)
		case errors.Is(err, os.ErrDeadlineExceeded):
			ended(copyStalled)
		default:
			ended(copyClientGone)
		}
		if err != nil {
			fail()
			return
		}
		if cw, ok := client.(closeWriter); ok {
			cw.CloseWrite()
		} else {
			fail()
		}
	}()
	wg.Wait()
	return in, out, how
}

// readErr notes the error its reads failed with, so that a copy's failure
// can be told apart from its destination's.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// RoundTripper returns an http.RoundTripper that sends requests to the
// cluster's agent as they are (no path rewriting). Upgrade requests get a
// 101 response whose Body is an io.ReadWriteCloser, as with net/http's
// transport.
func (r *Relay) RoundTripper(clusterID string) http.RoundTripper {
	return &clusterTransport{relay: r, id: clusterID}
}

type clusterTransport struct {
	relay *Relay
	id    string
}

func (t *clusterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.Header = cloneHeader(req.Header)
	if req.Body == nil || req.Body == http.NoBody {
		out.Body = nil
	}
	return t.relay.roundTripCluster(t.id, out, httpx.IsUpgrade(req.Header), false)
}

type closeBoth struct {
	io.ReadCloser
	up rawUpstream
}

// Close resets the stream at once: after a refusal the agent has nothing
// more to say on it.
func (c *closeBoth) Close() error {
	c.ReadCloser.Close()
	c.up.abort()
	return nil
}

// rawUpstream is the far end of an upgraded connection: a raw stream to
// the agent, or a connection to the replica that holds the cluster.
type rawUpstream interface {
	io.WriteCloser
	CloseWrite() error // ends the bytes towards it; reading goes on
	abort()            // drops it at once: something failed
}

// upgradedBody is the read-write body of a 101 response.
type upgradedBody struct {
	r  *bufio.Reader
	up rawUpstream
	// stopped, if set, tells that the relay ended the upgrade as it
	// stopped, and ended that the request was ended (EndRequest): a
	// failed read says so.
	stopped *atomic.Bool
	ended   *ending
}

func (b *upgradedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		if b.ended != nil {
			if why := b.ended.reason(); why != nil {
				return n, why
			}
		}
		if b.stopped != nil && b.stopped.Load() {
			err = errRelayStopped
		}
	}
	return n, err
}

// errRelayStopped is what reading a client's upgrade returns once the
// relay stopped under it; an ending Middleware shows it to the client.
var errRelayStopped = errors.New("the relay replica it went through stopped; run it again")

func (b *upgradedBody) Write(p []byte) (int, error) { return b.up.Write(p) }
func (b *upgradedBody) CloseWrite() error           { return b.up.CloseWrite() }
func (b *upgradedBody) Close() error                { return b.up.Close() }
