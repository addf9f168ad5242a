package sessions_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/clusterconnect/clusterconnect/sessions"
)

// cluster plays an API server's watch through a tunnel that breaks: it
// has events at resourceVersions 101…, and answers a watch from
// resourceVersion R with the events after R, breaking the stream after
// breakAfter of them (and a few bytes into the next), as many times as
// breaks says; a watch from before oldest is 410 Gone.
type cluster struct {
	t          *testing.T
	mediaType  string
	events     []metav1.WatchEvent // in resourceVersion order
	breakAfter int
	breaks     int
	oldest     int
	failFirst  int    // answers that fail outright before any works: the cluster unreachable
	refuse     string // once set, watches are refused with 403 and a Status saying this
	unready    int    // answers of 503 before any works: the cluster reconnecting

	mu   sync.Mutex
	asks []string // the queries it was asked
}

func pod(i int) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Namespace: "default", ResourceVersion: fmt.Sprint(100 + i)}}
}

func (c *cluster) encode(evs []metav1.WatchEvent) []byte {
	info, _ := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), c.mediaType)
	var buf bytesBuffer
	enc := streaming.NewEncoder(info.StreamSerializer.Framer.NewFrameWriter(&buf), info.StreamSerializer.Serializer)
	for _, ev := range evs {
		require.NoError(c.t, enc.Encode(&ev))
	}
	return buf.b
}

func (c *cluster) event(typ watch.EventType, obj runtime.Object) metav1.WatchEvent {
	info, _ := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), c.mediaType)
	raw, err := runtime.Encode(scheme.Codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion), obj)
	require.NoError(c.t, err)
	return metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: raw}}
}

type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

func (c *cluster) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.asks = append(c.asks, req.URL.RawQuery)
	if c.failFirst > 0 {
		c.failFirst--
		c.mu.Unlock()
		return nil, fmt.Errorf("tunnel: cluster not connected")
	}
	breakIt := c.breaks > 0
	c.breaks--
	refuse := c.refuse
	unready := c.unready > 0 && req.URL.Query().Get("resourceVersion") != "100"
	if unready {
		c.unready--
	}
	c.mu.Unlock()
	if unready {
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable", Header: http.Header{},
			Body: io.NopCloser(strings.NewReader(`{"kind":"Status","message":"cluster \"c\" is not connected to the relay","code":503}`))}, nil
	}
	if refuse != "" {
		body := fmt.Sprintf(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"reason":"Forbidden","code":403}`, refuse)
		return &http.Response{StatusCode: http.StatusForbidden, Status: "403 Forbidden", Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body))}, nil
	}
	q := req.URL.Query()
	from := 0
	if rv := q.Get("resourceVersion"); rv != "" {
		fmt.Sscan(rv, &from)
		from -= 100
	}
	if from < c.oldest {
		return &http.Response{StatusCode: http.StatusGone, Status: "410 Gone", Header: http.Header{}, Body: http.NoBody}, nil
	}
	evs := c.events[min(from, len(c.events)):]
	body := &breaking{err: io.EOF, chunk: 13}
	if breakIt && len(evs) > c.breakAfter {
		whole := c.encode(evs[:c.breakAfter])
		next := c.encode(evs[c.breakAfter : c.breakAfter+1])
		body.b, body.err = append(whole, next[:len(next)/2]...), fmt.Errorf("tunnel: the tunnel connection closed: %w", io.EOF)
	} else {
		body.b = c.encode(evs)
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {c.mediaType + ";stream=watch"}}, Body: body}, nil
}

func (c *cluster) queries() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.asks...)
}

func newCluster(t *testing.T, mediaType string, n int) *cluster {
	c := &cluster{t: t, mediaType: mediaType}
	for i := 1; i <= n; i++ {
		c.events = append(c.events, c.event(watch.Modified, pod(i)))
	}
	return c
}

func names(t *testing.T, events []watch.Event) []string {
	var out []string
	for _, ev := range events {
		if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Bookmark {
			out = append(out, p.Name)
		} else {
			out = append(out, string(ev.Type))
		}
	}
	return out
}

func want(n int) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("pod-%d", i))
	}
	return out
}

// A watch from a resourceVersion whose stream breaks, again and again, is
// resumed from the last event its client got whole: the client reads
// every event once, in order, and the stream's end is the cluster's.
func TestBrokenWatchResumes(t *testing.T) {
	for name, mt := range mediaTypes {
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, mt, 10)
			c.breakAfter, c.breaks = 3, 3
			req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/namespaces/default/pods?watch=true&resourceVersion=100&allowWatchBookmarks=true", nil)
			resp, err := sessions.Watches(c).RoundTrip(req)
			require.NoError(t, err)
			assert.Equal(t, want(10), names(t, decode(t, mt, resp.Body)))
			asks := c.queries()
			require.Len(t, asks, 4)
			assert.Contains(t, asks[1], "resourceVersion=103")
			assert.Contains(t, asks[2], "resourceVersion=106")
			assert.Contains(t, asks[3], "resourceVersion=109")
			assert.Contains(t, asks[3], "allowWatchBookmarks=true", "the rest of the query stays")
		})
	}
}

// A watch with sendInitialEvents resumes only once its initial events
// have ended, and then without asking for them again; broken before, it
// ends with an ERROR event.
func TestInitialEventsAreNotResumed(t *testing.T) {
	mt := mediaTypes["json"]
	bookmark := func(c *cluster, rv int) metav1.WatchEvent {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: fmt.Sprint(100 + rv), Annotations: map[string]string{"k8s.io/initial-events-end": "true"}}}
		return c.event(watch.Bookmark, p)
	}
	c := newCluster(t, mt, 6)
	c.events[2] = bookmark(c, 3) // two initial events, then their end
	c.breakAfter, c.breaks = 4, 1
	req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", nil)
	resp, err := sessions.Watches(c).RoundTrip(req)
	require.NoError(t, err)
	assert.Equal(t, []string{"pod-1", "pod-2", "BOOKMARK", "pod-4", "pod-5", "pod-6"}, names(t, decode(t, mt, resp.Body)))
	asks := c.queries()
	require.Len(t, asks, 2)
	assert.Contains(t, asks[1], "resourceVersion=104")
	assert.NotContains(t, asks[1], "sendInitialEvents")
	assert.NotContains(t, asks[1], "resourceVersionMatch")

	c = newCluster(t, mt, 6)
	c.events[4] = bookmark(c, 5)
	c.breakAfter, c.breaks = 2, 1 // inside the initial events
	resp, err = sessions.Watches(c).RoundTrip(req)
	require.NoError(t, err)
	got := decode(t, mt, resp.Body)
	assert.Equal(t, []string{"pod-1", "pod-2", "ERROR"}, names(t, got))
	assert.Len(t, c.queries(), 1, "not asked again")
}

// A resume the API server answers with 410 Gone (the resourceVersion is
// too old) ends the watch with that Status, so that a reflector relists.
func TestResumeTooOldEndsWithExpired(t *testing.T) {
	mt := mediaTypes["protobuf"]
	c := newCluster(t, mt, 6)
	c.breakAfter, c.breaks, c.oldest = 2, 1, 5
	req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/pods?watch=true&resourceVersion=100", nil)
	c.oldest = 0 // the first watch is fine…
	resp, err := sessions.Watches(c).RoundTrip(req)
	require.NoError(t, err)
	c.mu.Lock()
	c.oldest = 5 // …and by the time it breaks, compaction passed it
	c.mu.Unlock()
	got := decode(t, mt, resp.Body)
	require.Equal(t, []string{"pod-1", "pod-2", "ERROR"}, names(t, got))
	st := got[2].Object.(*metav1.Status)
	assert.EqualValues(t, http.StatusGone, st.Code)
	assert.Equal(t, metav1.StatusReasonExpired, st.Reason)
}

// A resumed watch answered 503 while the cluster reconnects (its agent
// moving to another replica) keeps asking within the window, and goes on.
func TestResumeWaitsThroughServiceUnavailable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mt := mediaTypes["json"]
		c := newCluster(t, mt, 6)
		c.breakAfter, c.breaks, c.unready = 2, 1, 3
		req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/pods?watch=true&resourceVersion=100", nil)
		resp, err := sessions.Watches(c).RoundTrip(req)
		require.NoError(t, err)
		got := decode(t, mt, resp.Body)
		assert.Equal(t, want(6), names(t, got), "every event once, none lost")
	})
}

// A watch whose resuming is refused ends with an ERROR event that carries
// the refusal's own words: what a new request would be told.
func TestResumeRefusedSaysWhy(t *testing.T) {
	mt := mediaTypes["json"]
	c := newCluster(t, mt, 6)
	c.breakAfter, c.breaks = 2, 1
	req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/pods?watch=true&resourceVersion=100", nil)
	resp, err := sessions.Watches(c).RoundTrip(req)
	require.NoError(t, err)
	c.mu.Lock()
	c.refuse = `bob@contoso.com is not allowed to impersonate user "erin@contoso.com"`
	c.mu.Unlock()
	got := decode(t, mt, resp.Body)
	require.Equal(t, []string{"pod-1", "pod-2", "ERROR"}, names(t, got))
	st := got[2].Object.(*metav1.Status)
	assert.EqualValues(t, http.StatusForbidden, st.Code)
	assert.Contains(t, st.Message, `was answered 403 Forbidden: bob@contoso.com is not allowed to impersonate user "erin@contoso.com"`)
}

// While the cluster cannot be reached the watch keeps asking, every
// quarter second, for DefaultResumeWithin; back within it, the watch goes
// on; not back, it ends saying so.
func TestResumeWaitsForTheCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mt := mediaTypes["json"]
		c := newCluster(t, mt, 5)
		c.breakAfter, c.breaks = 2, 1
		req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/pods?watch=true&resourceVersion=100", nil)
		resp, err := sessions.Watches(c).RoundTrip(req)
		require.NoError(t, err)
		c.mu.Lock()
		c.failFirst = 20 // five seconds away
		c.mu.Unlock()
		assert.Equal(t, want(5), names(t, decode(t, mt, resp.Body)))

		c = newCluster(t, mt, 5)
		c.breakAfter, c.breaks = 2, 1
		resp, err = sessions.Watches(c).RoundTrip(req)
		require.NoError(t, err)
		c.mu.Lock()
		c.failFirst = 1 << 30 // gone for good
		c.mu.Unlock()
		start := time.Now()
		got := decode(t, mt, resp.Body)
		assert.Equal(t, []string{"pod-1", "pod-2", "ERROR"}, names(t, got))
		assert.Equal(t, sessions.DefaultResumeWithin, time.Since(start).Round(time.Second))
		assert.Contains(t, got[2].Object.(*metav1.Status).Message, "could not be resumed within 30s")
	})
}

// What following a watch costs per event: reading a stream of pod events
// straight, and through Watches (finding each event's end, reading its
// resourceVersion).
func BenchmarkWatchEvents(b *testing.B) {
	for name, mt := range mediaTypes {
		c := &cluster{t: &testing.T{}, mediaType: mt}
		var evs []metav1.WatchEvent
		for i := 1; i <= 100; i++ {
			evs = append(evs, c.event(watch.Modified, pod(i)))
		}
		stream := c.encode(evs)
		req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/pods?watch=true&resourceVersion=100", nil)
		buf := make([]byte, 32<<10)
		for _, through := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/through-watches=%t", name, through), func(b *testing.B) {
				b.SetBytes(int64(len(stream))) // one op is 100 events
				b.ReportAllocs()
				for b.Loop() {
					var body io.ReadCloser = &breaking{b: stream, chunk: 16 << 10, err: io.EOF}
					if through {
						resp, _ := sessions.Watches(answer{mt, body}).RoundTrip(req)
						body = resp.Body
					}
					for {
						if _, err := body.Read(buf); err != nil {
							break
						}
					}
				}
			})
		}
	}
}

// A watch through two layers, as through the client proxy and the relay:
// when the layer behind (the relay) cannot resume within its window and
// ends the watch with its ERROR event, the layer in front does not pass
// that on but resumes through it from where its client is: the client
// sees every event once and no ERROR. An ERROR of the cluster's own (410)
// still reaches the client.
func TestTheLayerInFrontResumesWhatTheOneBehindCouldNot(t *testing.T) {
	for name, mt := range mediaTypes {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := newCluster(t, mt, 5)
				c.breakAfter, c.breaks = 2, 1
				req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/pods?watch=true&resourceVersion=100", nil)
				resp, err := sessions.Watches(sessions.Watches(c)).RoundTrip(req)
				require.NoError(t, err)
				c.mu.Lock()
				c.failFirst = int(sessions.DefaultResumeWithin/(250*time.Millisecond)) + 20 // past the layer behind's window
				c.mu.Unlock()
				assert.Equal(t, want(5), names(t, decode(t, mt, resp.Body)))
			})
		})
	}
}

// oneRead answers a watch with its whole body in one Read, io.EOF with it.
type oneRead struct{ b []byte }

func (r *oneRead) Read(p []byte) (int, error) { n := copy(p, r.b); r.b = r.b[n:]; return n, io.EOF }
func (r *oneRead) Close() error               { return nil }

// Events that came in the same read as the end of the stream reach the
// client before the watch resumes: a client may be waiting for them, and
// resuming may take a while.
func TestEventsBeforeABreakGoFirst(t *testing.T) {
	gotFirst := make(chan struct{})
	calls := 0
	rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		calls++
		h := http.Header{"Content-Type": {"application/json"}}
		if calls == 1 {
			body := `{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p5","resourceVersion":"5"}}}` + "\n" +
				`{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"broke","code":503,` +
				`"details":{"causes":[{"reason":"ClusterconnectResumable"}]}}}` + "\n"
			return &http.Response{StatusCode: 200, Header: h, Body: &oneRead{b: []byte(body)}, ContentLength: -1}, nil
		}
		select {
		case <-gotFirst:
		case <-time.After(10 * time.Second):
			return nil, fmt.Errorf("resumed before the client had the events it was owed")
		}
		body := `{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p6","resourceVersion":"6"}}}` + "\n"
		return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(strings.NewReader(body))}, nil
	})
	req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/pods?watch=true&resourceVersion=1", nil)
	resp, err := sessions.Watches(rt).RoundTrip(req)
	require.NoError(t, err)
	buf := make([]byte, 4096)
	n, err := resp.Body.Read(buf)
	require.NoError(t, err)
	assert.Contains(t, string(buf[:n]), `"name":"p5"`)
	close(gotFirst)
	rest, _ := io.ReadAll(resp.Body)
	assert.Contains(t, string(rest), `"name":"p6"`)
	assert.NotContains(t, string(rest), "resumed before")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
