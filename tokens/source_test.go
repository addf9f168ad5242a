package tokens_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens"
)

func TestStaticTokenSource(t *testing.T) {
	tok, err := tokens.StaticTokenSource("abc").Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "abc", tok.Value)
	_, err = tokens.StaticTokenSource("").Token(context.Background())
	assert.ErrorIs(t, err, tokens.ErrNoToken)
}

func TestFileTokenSourceRereadsOnChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("first\n"), 0o600))
	src := tokens.FileTokenSource(path)
	tok, err := src.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "first", tok.Value)

	require.NoError(t, os.WriteFile(path, []byte("second-token\n"), 0o600))
	tok, err = src.Token(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "second-token", tok.Value)

	require.NoError(t, os.Remove(path))
	_, err = src.Token(context.Background())
	assert.ErrorIs(t, err, tokens.ErrNoToken)
}

func jwtWithExp(exp time.Time) string {
	b64 := func(s string) string {
		return strings.TrimRight(strings.NewReplacer("+", "-", "/", "_").Replace(base64Std(s)), "=")
	}
	return b64(`{"alg":"RS256"}`) + "." + b64(fmt.Sprintf(`{"exp":%d}`, exp.Unix())) + ".c2ln"
}

func TestCommandTokenSourceOutputs(t *testing.T) {
	exp := time.Date(2026, 11, 22, 21, 0, 0, 0, time.UTC)
	now := time.Date(2026, 11, 22, 20, 0, 0, 0, time.UTC)
	jwt := jwtWithExp(exp)
	for _, tc := range []struct {
		name, output string
		want         tokens.ClientToken
	}{
		{"bare token", "opaque-token\n", tokens.ClientToken{Value: "opaque-token"}},
		{"bare JWT", jwt + "\n", tokens.ClientToken{Value: jwt, Expiry: exp}},
		{"az with expires_on", `{"accessToken":"az-token","expiresOn":"2026-11-22 21:00:00.000000","expires_on":1795381200,"tenant":"t","tokenType":"Bearer"}`,
			tokens.ClientToken{Value: "az-token", Expiry: time.Unix(1795381200, 0)}},
		{"older az with only expiresOn (local time)", `{"accessToken":"az-token","expiresOn":"2026-11-22 21:00:00.000000"}`,
			tokens.ClientToken{Value: "az-token", Expiry: time.Date(2026, 11, 22, 21, 0, 0, 0, time.Local)}},
		{"OAuth response", `{"access_token":"oauth-token","expires_in":3600}`, tokens.ClientToken{Value: "oauth-token", Expiry: now.Add(time.Hour)}},
		{"ExecCredential", `{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"exec-token","expirationTimestamp":"2026-11-22T21:00:00Z"}}`,
			tokens.ClientToken{Value: "exec-token", Expiry: exp}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			require.NoError(t, os.WriteFile(out, []byte(tc.output), 0o600))
			src := &tokens.CommandTokenSource{Command: []string{"cat", out}}
			tokens.SetCommandClock(src, func() time.Time { return now })
			tok, err := src.Token(context.Background())
			require.NoError(t, err)
			assert.Equal(t, tc.want.Value, tok.Value)
			assert.True(t, tc.want.Expiry.Equal(tok.Expiry), "expiry %s, want %s", tok.Expiry, tc.want.Expiry)
		})
	}
}

func TestCommandTokenSourceFailuresAreClear(t *testing.T) {
	src := &tokens.CommandTokenSource{Command: []string{"sh", "-c", "echo 'Please run az login to setup account.' >&2; exit 1"}}
	_, err := src.Token(context.Background())
	require.ErrorIs(t, err, tokens.ErrNoToken)
	assert.Contains(t, err.Error(), "Please run az login")
	assert.Contains(t, err.Error(), "exit status 1")

	_, err = (&tokens.CommandTokenSource{Command: []string{"sh", "-c", `echo '{"accessToken":""}'`}}).Token(context.Background())
	assert.ErrorContains(t, err, "no accessToken")

	_, err = (&tokens.CommandTokenSource{Command: []string{"no-such-command-anywhere"}}).Token(context.Background())
	assert.ErrorIs(t, err, tokens.ErrNoToken)

	_, err = (&tokens.CommandTokenSource{Command: []string{"sleep", "10"}, Timeout: 50 * time.Millisecond}).Token(context.Background())
	assert.ErrorContains(t, err, "deadline exceeded")
}

// countingSource hands out numbered tokens valid for an hour from "now".
type countingSource struct {
	calls atomic.Int32
	now   func() time.Time
	gate  chan struct{}
}

func (s *countingSource) Token(ctx context.Context) (tokens.ClientToken, error) {
	n := s.calls.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	return tokens.ClientToken{Value: fmt.Sprint("token-", n), Expiry: s.now().Add(time.Hour)}, nil
}

func TestCachedTokenSourceRefreshesBeforeExpiry(t *testing.T) {
	c := newClock()
	src := &countingSource{now: c.now}
	cached := tokens.NewCachedTokenSource(src, 5*time.Minute)
	tokens.SetCacheClock(cached, c.now)

	get := func() string {
		tok, err := cached.Token(context.Background())
		require.NoError(t, err)
		return tok.Value
	}
	assert.Equal(t, "token-1", get())
	c.add(54 * time.Minute)
	assert.Equal(t, "token-1", get(), "still well before expiry")
	c.add(2 * time.Minute) // 4 minutes left: inside the refresh margin
	assert.Equal(t, "token-2", get())
}

func TestCachedTokenSourceSharesOneFetch(t *testing.T) {
	src := &countingSource{now: time.Now, gate: make(chan struct{})}
	cached := tokens.NewCachedTokenSource(src, 0)

	// One caller gives up; the fetch it started goes on for the others.
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() { _, err := cached.Token(ctx); errs <- err }()
	require.Eventually(t, func() bool { return src.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	assert.ErrorIs(t, <-errs, context.Canceled)

	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := cached.Token(context.Background())
			assert.NoError(t, err)
			assert.Equal(t, "token-1", tok.Value)
		}()
	}
	close(src.gate)
	wg.Wait()
	assert.EqualValues(t, 1, src.calls.Load())
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
