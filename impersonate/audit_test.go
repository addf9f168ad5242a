package impersonate_test

import (
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// lockedLog is a log destination safe for the handler's goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A refused request's audit line says why, and never carries the token.
func TestAuditLineSaysWhyARequestWasRefused(t *testing.T) {
	var logs lockedLog
	r := newRecorder(t, func(c *impersonate.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	expired := r.token(t, alice, func(c *oidctest.EntraClaims) { c.Expiry = time.Now().Add(-time.Hour) })
	req, _ := http.NewRequest(http.MethodGet, r.handler.URL+"/api/v1/pods", nil)
	req.Header.Set("Authorization", "Bearer "+expired)
	ans := r.do(t, req)
	assert.Equal(t, http.StatusUnauthorized, ans.code)
	line := logs.String()
	assert.Contains(t, line, "status=401")
	assert.Contains(t, line, "reason=")
	assert.Contains(t, line, ans.message, "the same words the caller read")
	assert.NotContains(t, line, expired)
}
