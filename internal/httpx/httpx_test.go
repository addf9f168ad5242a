package httpx_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

func TestWriteStatus(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		code       int
		text       bool
		header     map[string]string
		reason     string
	}{
		{"403 on a resource: a Status", "/api/v1/pods", http.StatusForbidden, false, nil, "Forbidden"},
		{"403 on a discovery root: text", "/api", http.StatusForbidden, true, nil, ""},
		{"502 on /clusters/x/apis/: text", "/clusters/x/apis/", http.StatusBadGateway, true, nil, ""},
		{"401 on /api: a Status, and the words in a Warning (client-go prints fixed words for 401)", "/api", http.StatusUnauthorized, false,
			map[string]string{"Www-Authenticate": `Bearer realm="clusterconnect"`, "Warning": `299 - "what went wrong"`}, "Unauthorized"},
		{"503 on /clusters/x/version: a Warning too", "/clusters/x/version", http.StatusServiceUnavailable, false,
			map[string]string{"Warning": `299 - "what went wrong"`}, "ServiceUnavailable"},
		{"401 on a resource: the Status alone, which kubectl shows", "/api/v1/pods", http.StatusUnauthorized, false,
			map[string]string{"Warning": ""}, "Unauthorized"},
		{"503 with the caller's Retry-After", "/api/v1/pods", http.StatusServiceUnavailable, false, map[string]string{"Retry-After": "3"}, "ServiceUnavailable"},
		{"503 without: none added", "/api/v1/pods", http.StatusServiceUnavailable, false, map[string]string{"Retry-After": ""}, "ServiceUnavailable"},
		{"429 with Retry-After", "/api/v1/pods", http.StatusTooManyRequests, false, map[string]string{"Retry-After": "2"}, "TooManyRequests"},
		{"431", "/api/v1/pods", http.StatusRequestHeaderFieldsTooLarge, false, nil, "BadRequest"},
		{"an unnamed code", "/api/v1/pods", http.StatusTeapot, false, nil, "Unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			retry, _ := strconv.Atoi(tc.header["Retry-After"])
			if retry > 0 {
				httpx.RetryAfter(w, time.Duration(retry)*time.Second-time.Millisecond)
			}
			httpx.WriteStatus(w, httptest.NewRequest(http.MethodGet, tc.path, nil), tc.code, "prod-eu", "what went wrong")
			assert.Equal(t, tc.code, w.Code)
			assert.Equal(t, "nosniff", w.Header().Get("X-Content-Type-Options"))
			assert.Equal(t, strconv.Itoa(w.Body.Len()), w.Header().Get("Content-Length"), "complete even if the connection closes after it")
			for k, v := range tc.header {
				assert.Equal(t, v, w.Header().Get(k), k)
			}
			if tc.text {
				assert.True(t, strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain"))
				assert.Equal(t, "what went wrong\n", w.Body.String())
				return
			}
			var st struct {
				Kind, APIVersion, Status, Message, Reason string
				Code                                      int
				Details                                   struct {
					Name              string
					RetryAfterSeconds int
				}
			}
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &st))
			assert.Equal(t, "Status", st.Kind)
			assert.Equal(t, "v1", st.APIVersion)
			assert.Equal(t, "Failure", st.Status)
			assert.Equal(t, "what went wrong", st.Message)
			assert.Equal(t, tc.reason, st.Reason)
			assert.Equal(t, tc.code, st.Code)
			assert.Equal(t, "prod-eu", st.Details.Name)
			assert.Equal(t, retry, st.Details.RetryAfterSeconds, "the header and the details agree")
		})
	}
}

// TestWarningReadsAsClientGoReadsIt: whatever a message holds, client-go
// parses the header back to the message's words, as kubectl prints them.
func TestWarningReadsAsClientGoReadsIt(t *testing.T) {
	long := strings.Repeat("é", 1000)
	for text, want := range map[string]string{
		"the relay did not accept the token: tokens: token expired at 2026-12-06T16:00:00Z: get a new one": "",
		`audience "a\\b \"c\"" is not one of ["api://x"]`:                                                  "",
		"a line\r\nWarning: forged": "a line  Warning: forged",
		"bad \xff byte":             "bad \ufffd byte",
		long:                        long[:1024] + "…",
	} {
		if want == "" {
			want = text
		}
		got, errs := utilnet.ParseWarningHeaders([]string{httpx.Warning(text)})
		require.Empty(t, errs)
		require.Len(t, got, 1)
		assert.Equal(t, 299, got[0].Code)
		assert.Equal(t, want, got[0].Text)
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []string
		token  string
		err    error
	}{
		{"bearer", []string{"Bearer abc"}, "abc", nil},
		{"any case, extra spaces", []string{"bEaReR   abc "}, "abc", nil},
		{"none", nil, "", httpx.ErrNoBearer},
		{"two", []string{"Bearer a", "Bearer b"}, "", httpx.ErrManyAuthorized},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", httpx.ErrNotBearer},
		{"empty token", []string{"Bearer "}, "", httpx.ErrNotBearer},
		{"no scheme", []string{"abc"}, "", httpx.ErrNotBearer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := httpx.BearerToken(http.Header{"Authorization": tc.values})
			assert.Equal(t, tc.token, tok)
			assert.ErrorIs(t, err, tc.err)
		})
	}
}

func TestServeUntilStopsCleanly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") })}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpx.ServeUntil(ctx, srv, ln, time.Second) }()

	resp, err := http.Get("http://" + ln.Addr().String())
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "up", string(body))

	cancel()
	assert.NoError(t, <-done, "a stop by context is not an error")
	_, err = http.Get("http://" + ln.Addr().String())
	assert.Error(t, err, "nothing listens any more")
}
