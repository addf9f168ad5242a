package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterconnect/clusterconnect/tunnel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

// echo answers with what it saw of the request.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"method": r.Method, "path": r.URL.Path, "rawPath": r.URL.RawPath, "query": r.URL.RawQuery,
		"host": r.Host, "body": string(body), "header": r.Header,
	})
})

type echoed struct {
	Method, Path, RawPath, Query, Host, Body string
	Header                                   http.Header
}

func decode(t *testing.T, resp *http.Response) echoed {
	t.Helper()
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var e echoed
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	return e
}

func TestRequestReachesAgentWithoutClusterPrefix(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{})
	req, _ := http.NewRequest(http.MethodPost, h.url("/api/v1/namespaces/a%2Fb/pods?watch=1&x=%20"), strings.NewReader("payload"))
	req.Header.Set("X-Custom", "kept")
	resp, err := h.client().Do(req)
	require.NoError(t, err)
	e := decode(t, resp)
	assert.Equal(t, "POST", e.Method)
	assert.Equal(t, "/api/v1/namespaces/a/b/pods", e.Path)
	assert.Equal(t, "/api/v1/namespaces/a%2Fb/pods", e.RawPath, "escaping survives the prefix removal")
	assert.Equal(t, "watch=1&x=%20", e.Query)
	assert.Equal(t, "payload", e.Body)
	assert.Equal(t, "kept", e.Header.Get("X-Custom"))
	assert.Equal(t, req.URL.Host, e.Host)
}

// No header of the project's own namespace a client sends reaches the
// agent: they are the relay's to set.
func TestClientsOwnHeadersStopAtTheRelay(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{})
	req, _ := http.NewRequest(http.MethodGet, h.url("/api/v1/pods"), nil)
	for _, name := range []string{"Clusterconnect-Stream", "Clusterconnect-Agent-Id", "Clusterconnect-Cluster-Id", "Clusterconnect-Replicas", "Clusterconnect-To-Agent", "clusterconnect-anything"} {
		req.Header[name] = []string{"forged"}
	}
	req.Header.Set("Clusterconnectx", "kept: not the namespace")
	resp, err := h.client().Do(req)
	require.NoError(t, err)
	e := decode(t, resp)
	for name := range e.Header {
		assert.False(t, strings.HasPrefix(strings.ToLower(name), "clusterconnect-"), "%s reached the agent", name)
	}
	assert.Equal(t, "kept: not the namespace", e.Header.Get("Clusterconnectx"))
}

func TestHTTP1ClientsWorkToo(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{})
	req, _ := http.NewRequest(http.MethodGet, h.url("/healthz"), nil)
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "dropped")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("X-Kept", "kept")
	resp, err := http1Client(h.client()).Do(req)
	require.NoError(t, err)
	assert.Equal(t, 1, resp.ProtoMajor)
	e := decode(t, resp)
	assert.Equal(t, "/healthz", e.Path)
	assert.Empty(t, e.Header.Get("X-Hop"), "a header named in Connection is hop-by-hop")
	assert.Empty(t, e.Header.Get("Keep-Alive"))
	assert.Equal(t, "kept", e.Header.Get("X-Kept"))
}

func TestManyConcurrentStreamsSpreadOverConnections(t *testing.T) {
	var mu sync.Mutex
	remotes := map[string]int{}
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The agent's end of each tunnel connection has its own port.
		local := r.Context().Value(http.LocalAddrContextKey).(net.Addr).String()
		mu.Lock()
		remotes[local]++
		mu.Unlock()
		fmt.Fprint(w, r.URL.Query().Get("i"))
	}), harnessOpts{
		// 500 requests at once under -race on two cores can keep a ping's
		// answer waiting past the busy bounds: this test is not about
		// finding dark connections.
		relayCfg: func(c *tunnel.RelayConfig) { c.BusyPingTimeout = time.Minute },
		agentCfg: func(c *tunnel.AgentConfig) { c.BusyDeadAfter = time.Minute },
	})
	require.Eventually(t, func() bool { return len(h.relay.Conns()) == 2 }, 10e9, 5e6)

	var g errgroup.Group
	for i := range 500 {
		g.Go(func() error {
			resp, err := h.client().Get(h.url(fmt.Sprintf("/n?i=%d", i)))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if string(b) != fmt.Sprint(i) {
				return fmt.Errorf("request %d got answer %q", i, b)
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	assert.Len(t, remotes, 2, "requests use both tunnel connections: %v", remotes)
	st := h.relay.Stats()
	assert.Equal(t, st.StreamsOpened, st.StreamsClosed, "every stream was closed")
}

func TestLargeBodiesBothWays(t *testing.T) {
	const size = 64 << 20
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		n, err := io.Copy(sum, r.Body)
		if err != nil || n != size {
			http.Error(w, fmt.Sprintf("read %d bytes: %v", n, err), 500)
			return
		}
		w.Header().Set("X-Upload-Sha256", fmt.Sprintf("%x", sum.Sum(nil)))
		io.Copy(w, io.LimitReader(rand.Reader, size))
	}), harnessOpts{})

	up := make([]byte, size)
	rand.Read(up)
	resp, err := h.client().Post(h.url("/big"), "application/octet-stream", bytes.NewReader(up))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, fmt.Sprintf("%x", sha256.Sum256(up)), resp.Header.Get("X-Upload-Sha256"))
	n, err := io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	assert.EqualValues(t, size, n)
}

func TestWatchDeliversEventsOneByOne(t *testing.T) {
	next := make(chan string)
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for ev := range next {
			fmt.Fprintln(w, ev)
			w.(http.Flusher).Flush()
		}
	}), harnessOpts{})

	resp, err := h.client().Get(h.url("/api/v1/pods?watch=true"))
	require.NoError(t, err)
	defer resp.Body.Close()
	lines := newLineReader(resp.Body)
	for i := range 5 {
		ev := fmt.Sprintf(`{"type":"ADDED","n":%d}`, i)
		// The handler writes the next event only after the client has
		// read this one, so nothing may wait for more data to arrive.
		next <- ev
		assert.Equal(t, ev, lines.next(t))
	}
	close(next)
}

func TestClientGoneCancelsHandler(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		close(cancelled)
	}), harnessOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url("/watch"), nil)
	resp, err := h.client().Do(req)
	require.NoError(t, err)
	<-started
	cancel()
	resp.Body.Close()
	<-cancelled // the handler's context ends: a hang here fails the test by timeout
}

func TestUnknownClusterAnswers503WithStatus(t *testing.T) {
	h := newHarness(t, echo, harnessOpts{})
	resp, err := h.client().Get(h.srv.URL + "/clusters/no-such-cluster/api/v1/pods")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	var st struct {
		Kind, Status, Message, Reason string
		Code                          int
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	assert.Equal(t, "Status", st.Kind)
	assert.Equal(t, "Failure", st.Status)
	assert.Equal(t, "ServiceUnavailable", st.Reason)
	assert.Contains(t, st.Message, `"no-such-cluster" is not connected`)

	resp, err = h.client().Get(h.srv.URL + "/elsewhere")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}

// Trailers cross the tunnel both ways: a request's, announced and sent
// after its body, reach the agent's handler, and an answer's reach the
// client after the body.
func TestTrailersCrossTheTunnel(t *testing.T) {
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Answer-Sum")
		fmt.Fprintf(w, "%d bytes", len(body))
		w.Header().Set("X-Answer-Sum", "sum:"+r.Trailer.Get("X-Request-Sum"))
	}), harnessOpts{})
	body := strings.Repeat("u", 100<<10)
	req, _ := http.NewRequest(http.MethodPut, h.url("/upload"), io.NopCloser(strings.NewReader(body)))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Request-Sum": {"abc"}}
	resp, err := h.client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("%d bytes", len(body)), string(got))
	assert.Equal(t, "sum:abc", resp.Trailer.Get("X-Answer-Sum"))
}

// A HEAD answer keeps its Content-Length and has no body, and the
// connection serves on.
func TestHeadKeepsContentLength(t *testing.T) {
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "12345")
		if r.Method != http.MethodHead {
			w.Write(make([]byte, 12345))
		}
	}), harnessOpts{})
	for range 3 {
		resp, err := h.client().Head(h.url("/thing"))
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.EqualValues(t, 12345, resp.ContentLength)
		assert.Empty(t, body)
	}
	resp, err := h.client().Get(h.url("/thing"))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Len(t, body, 12345)
	assert.Zero(t, h.relay.Stats().StreamWindowGrown)
	require.Eventually(t, func() bool {
		st := h.relay.Stats()
		open := 0
		for _, c := range h.relay.Conns() {
			open += c.Streams
		}
		return st.StreamsOpened == st.StreamsClosed && open == 0
	}, 10*time.Second, 5*time.Millisecond, "every stream ended")
}

// A large answer of known length, which the agent collects into large
// writes, arrives whole and in order, whatever pieces its handler wrote
// it in.
func TestLargeSizedAnswerArrivesWhole(t *testing.T) {
	body := make([]byte, 3<<20+123)
	for i := range body {
		body[i] = byte(i*7 + i>>11)
	}
	pieces := []int{1, 7 << 10, 200 << 10, 32 << 10, 128 << 10, 3, 64<<10 + 1}
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		rest := body
		for i := 0; len(rest) > 0; i++ {
			n := min(pieces[i%len(pieces)], len(rest))
			if _, err := w.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
	}), harnessOpts{})
	resp, err := h.client().Get(h.url("/large"))
	require.NoError(t, err)
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.EqualValues(t, len(body), resp.ContentLength)
	assert.True(t, bytes.Equal(body, got), "the body arrived changed")
}

// A handler that flushes a large answer of known length has what it
// wrote leave the agent then, not once the agent's buffer fills. (The
// relay's HTTP clients get an answer of known length as their server
// buffers it; the relay's RoundTripper gets it as it arrives.)
func TestFlushSendsWhatALargeAnswerHolds(t *testing.T) {
	read := make(chan struct{})
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(1<<20))
		io.WriteString(w, "first part")
		http.NewResponseController(w).Flush()
		select {
		case <-read:
		case <-r.Context().Done():
			return
		}
		w.Write(make([]byte, 1<<20-len("first part")))
	}), harnessOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://cluster/flushed", nil)
	resp, err := h.relay.RoundTripper(clusterID).RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	first := make([]byte, len("first part"))
	_, err = io.ReadFull(resp.Body, first)
	require.NoError(t, err, "the flushed part did not arrive while the handler waited")
	assert.Equal(t, "first part", string(first))
	close(read)
	n, err := io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	assert.EqualValues(t, 1<<20-len("first part"), n)
}
