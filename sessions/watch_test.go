package sessions_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	restclientwatch "k8s.io/client-go/rest/watch"

	"github.com/clusterconnect/clusterconnect/sessions"
)

var mediaTypes = map[string]string{
	"json":     "application/json",
	"protobuf": "application/vnd.kubernetes.protobuf",
}

// stream encodes pods as ADDED events the way the API server writes a
// watch of the media type.
func stream(t *testing.T, mediaType string, pods int) []byte {
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), mediaType)
	require.True(t, ok)
	var buf bytes.Buffer
	enc := streaming.NewEncoder(info.StreamSerializer.Framer.NewFrameWriter(&buf), info.StreamSerializer.Serializer)
	embedded := scheme.Codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion)
	for i := range pods {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Namespace: "default", ResourceVersion: fmt.Sprint(100 + i)}}
		obj, err := runtime.Encode(embedded, pod)
		require.NoError(t, err)
		require.NoError(t, enc.Encode(&metav1.WatchEvent{Type: string(watch.Added), Object: runtime.RawExtension{Raw: obj}}))
	}
	return buf.Bytes()
}

// decode reads a watch stream as client-go's watch decoder does, and
// returns its events.
func decode(t *testing.T, mediaType string, body io.ReadCloser) []watch.Event {
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), mediaType)
	require.True(t, ok)
	dec := restclientwatch.NewDecoder(streaming.NewDecoder(info.StreamSerializer.Framer.NewFrameReader(body), info.StreamSerializer.Serializer),
		scheme.Codecs.UniversalDeserializer())
	var events []watch.Event
	for {
		typ, obj, err := dec.Decode()
		if errors.Is(err, io.EOF) {
			return events
		}
		require.NoError(t, err, "the stream decodes to its end")
		events = append(events, watch.Event{Type: typ, Object: obj})
	}
}

// breaking gives b a few bytes at a time, as a tunnel delivers frames,
// then fails with err (io.EOF: ends cleanly).
type breaking struct {
	b     []byte
	chunk int
	err   error
}

func (r *breaking) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, r.err
	}
	n := copy(p[:min(len(p), r.chunk)], r.b)
	r.b = r.b[n:]
	return n, nil
}

func (r *breaking) Close() error { return nil }

type answer struct {
	mediaType string
	body      io.ReadCloser
}

func (a answer) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {a.mediaType + ";stream=watch"}}, Body: a.body}, nil
}

// watchRequest is a watch without a resourceVersion: its first events
// are synthetic and in no order, so it is never resumed.
func watchRequest(t *testing.T) *http.Request {
	req, err := http.NewRequest(http.MethodGet, "https://cluster/api/v1/namespaces/default/pods?watch=true", nil)
	require.NoError(t, err)
	return req
}

// A watch that cannot be resumed and whose stream breaks ends with every
// event that arrived whole, then an ERROR event with a Status saying why,
// which client-go's own decoder reads: whatever the chunks, and when the
// break cuts an event short (that event is dropped: its client never saw
// any of it).
func TestBrokenWatchEndsWithAnErrorEvent(t *testing.T) {
	for name, mt := range mediaTypes {
		full := stream(t, mt, 3)
		cutShort := full[:len(full)-5]
		for _, tt := range []struct {
			name  string
			body  []byte
			chunk int
			whole int
		}{
			{"whole events", full, 1 << 20, 3},
			{"seven bytes at a time", full, 7, 3},
			{"cut in the last event", cutShort, 11, 2},
		} {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				// As the relay's client says it: wrapping io.EOF, which
				// is no clean end.
				broken := fmt.Errorf("tunnel: the tunnel connection closed: tunnel: reading from the agent: %w", io.EOF)
				rt := sessions.Watches(answer{mt, &breaking{b: tt.body, chunk: tt.chunk, err: broken}})
				resp, err := rt.RoundTrip(watchRequest(t))
				require.NoError(t, err)
				events := decode(t, mt, resp.Body)
				require.Len(t, events, tt.whole+1)
				for i, ev := range events[:tt.whole] {
					assert.Equal(t, watch.Added, ev.Type)
					assert.Equal(t, fmt.Sprintf("pod-%d", i), ev.Object.(*corev1.Pod).Name)
				}
				last := events[tt.whole]
				require.Equal(t, watch.Error, last.Type)
				st := last.Object.(*metav1.Status)
				assert.EqualValues(t, http.StatusServiceUnavailable, st.Code)
				assert.Equal(t, metav1.StatusReasonServiceUnavailable, st.Reason)
				assert.Contains(t, st.Message, "reading from the agent")
			})
		}
	}
}

// A watch that ends cleanly, and every request that is no watch, pass as
// they came.
func TestOtherAnswersPassUntouched(t *testing.T) {
	full := stream(t, mediaTypes["json"], 2)
	rt := sessions.Watches(answer{"application/json", &breaking{b: full, chunk: 5, err: io.EOF}})
	resp, err := rt.RoundTrip(watchRequest(t))
	require.NoError(t, err)
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, full, got, "the same bytes, no ERROR event")

	body := &breaking{b: []byte("{}"), chunk: 2, err: io.EOF}
	req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/pods", nil)
	resp, err = sessions.Watches(answer{"application/json", body}).RoundTrip(req)
	require.NoError(t, err)
	assert.Same(t, body, resp.Body, "a list is not touched")

	cbor := &breaking{b: []byte("x"), chunk: 1, err: errors.New("broken")}
	resp, err = sessions.Watches(answer{"application/cbor-seq", cbor}).RoundTrip(watchRequest(t))
	require.NoError(t, err)
	assert.Same(t, cbor, resp.Body, "an encoding it does not know is not touched")
}

func TestIsWatch(t *testing.T) {
	for url, want := range map[string]bool{
		"/api/v1/pods?watch=true":                            true,
		"/api/v1/pods?watch=1":                               true,
		"/api/v1/pods?watch=false":                           false,
		"/api/v1/pods":                                       false,
		"/api/v1/watch/namespaces/default/pods":              true,
		"/apis/apps/v1/watch/namespaces/default/deployments": true,
		"/apis/apps/v1/namespaces/default/deployments/watch": false,
		"/apis/apps/v1/namespaces/watch/deployments":         false,
		"/api/v1/namespaces/watch/pods":                      false,
		"/clusters/prod/api/v1/watch/pods":                   true,
		"/clusters/prod/api/v1/pods?watch=true":              true,
	} {
		req, _ := http.NewRequest(http.MethodGet, "https://cluster"+url, nil)
		assert.Equal(t, want, sessions.IsWatch(req), url)
	}
}

// What Watches costs a request that is not a watch.
func BenchmarkWatchesOnAGet(b *testing.B) {
	body := &breaking{err: io.EOF}
	rt := sessions.Watches(answer{"application/json", body})
	req, _ := http.NewRequest(http.MethodGet, "https://cluster/api/v1/namespaces/default/pods/web?timeout=32s", nil)
	b.ReportAllocs()
	for b.Loop() {
		rt.RoundTrip(req)
	}
}

// A watch is asked for uncompressed: the API server gzips one that begins
// with its initial events when the client accepts gzip, as client-go's
// informers do by default, and its events would never be seen whole (the
// informer waited for ever for the bookmark that ends them). A stream
// compressed all the same passes as it is, at once.
func TestWatchesAreAskedForAsTheyAre(t *testing.T) {
	req, err := http.NewRequest(http.MethodGet, "https://cluster/api/v1/namespaces/e2e/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", nil)
	require.NoError(t, err)
	req.Header.Set("Accept-Encoding", "gzip")
	gz := []byte("\x1f\x8b\b\x00\x00\x00\x00\x00\x04\xff")
	var asked http.Header
	rt := sessions.Watches(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		asked = r.Header.Clone()
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(&breaking{b: gz, chunk: 100, err: io.EOF}),
			Header: http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}}, nil
	}))
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	assert.NotContains(t, asked, "Accept-Encoding")
	assert.Equal(t, "gzip", req.Header.Get("Accept-Encoding"), "the caller's request is not changed")
	buf := make([]byte, 100)
	n, err := resp.Body.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, gz, buf[:n], "passed on at once, not held as an event in progress")
}
