package impersonate_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/impersonate"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestOneAuditLinePerRequestWithoutTokens(t *testing.T) {
	var logs syncBuffer
	p := newProxy(t, func(c *impersonate.Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	good := p.token(t, alice, nil)
	code, _ := selfReview(t, p, good, nil)
	require.Equal(t, http.StatusCreated, code)
	code, _ = selfReview(t, p, "garbage-token-value", nil)
	require.Equal(t, http.StatusUnauthorized, code)

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		if m["msg"] == "request" {
			lines = append(lines, m)
		}
	}
	require.Len(t, lines, 2)
	assert.Equal(t, "alice@contoso.com", lines[0]["user"])
	assert.Equal(t, []any{"grp-readers"}, lines[0]["groups"])
	assert.Equal(t, "POST", lines[0]["method"])
	assert.Equal(t, "/apis/authentication.k8s.io/v1/selfsubjectreviews", lines[0]["path"])
	assert.EqualValues(t, 201, lines[0]["status"])
	assert.Greater(t, lines[0]["bytes"], float64(0))
	assert.Contains(t, lines[0], "duration")
	assert.EqualValues(t, 401, lines[1]["status"])
	assert.NotContains(t, lines[1], "user")
	assert.NotContains(t, logs.String(), good)
	assert.NotContains(t, logs.String(), "garbage-token-value")
}
