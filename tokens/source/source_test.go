package source_test

import (
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
	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/tokens/source"
)

func TestStatic(t *testing.T) {
	tok, err := source.Static("abc").Token()
	require.NoError(t, err)
	assert.Equal(t, "abc", tok.AccessToken)
	assert.Equal(t, "Bearer", tok.Type())
	_, err = source.Static("").Token()
	assert.ErrorIs(t, err, source.ErrNoToken)
}

func TestFileRereadsOnChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("first\n"), 0o600))
	src := source.File(path)
	tok, err := src.Token()
	require.NoError(t, err)
	assert.Equal(t, "first", tok.AccessToken)

	require.NoError(t, os.WriteFile(path, []byte("second-token\n"), 0o600))
	tok, err = src.Token()
	require.NoError(t, err)
	assert.Equal(t, "second-token", tok.AccessToken)

	require.NoError(t, os.Remove(path))
	_, err = src.Token()
	assert.ErrorIs(t, err, source.ErrNoToken)
}

func jwtWithExp(exp time.Time) string {
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	return b64(`{"alg":"RS256"}`) + "." + b64(fmt.Sprintf(`{"exp":%d}`, exp.Unix())) + ".c2ln"
}

func TestCommandOutputs(t *testing.T) {
	exp := time.Date(2026, 11, 22, 21, 0, 0, 0, time.UTC)
	now := time.Date(2026, 11, 22, 20, 0, 0, 0, time.UTC)
	jwt := jwtWithExp(exp)
	for _, tc := range []struct {
		name, output string
		token        string
		expiry       time.Time
	}{
		{"bare token, no expiry of its own", "opaque-token\n", "opaque-token", now.Add(source.UnknownExpiry)},
		{"bare JWT", jwt + "\n", jwt, exp},
		{"az with expires_on", `{"accessToken":"az-token","expiresOn":"2026-11-22 21:00:00.000000","expires_on":1795381200,"tenant":"t","tokenType":"Bearer"}`,
			"az-token", time.Unix(1795381200, 0)},
		{"older az with only expiresOn (local time)", `{"accessToken":"az-token","expiresOn":"2026-11-22 21:00:00.000000"}`,
			"az-token", time.Date(2026, 11, 22, 21, 0, 0, 0, time.Local)},
		{"OAuth response", `{"access_token":"oauth-token","expires_in":3600}`, "oauth-token", now.Add(time.Hour)},
		{"ExecCredential", `{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"exec-token","expirationTimestamp":"2026-11-22T21:00:00Z"}}`,
			"exec-token", exp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			require.NoError(t, os.WriteFile(out, []byte(tc.output), 0o600))
			src := &source.Command{Command: []string{"cat", out}}
			source.SetCommandClock(src, func() time.Time { return now })
			tok, err := src.Token()
			require.NoError(t, err)
			assert.Equal(t, tc.token, tok.AccessToken)
			assert.True(t, tc.expiry.Equal(tok.Expiry), "expiry %s, want %s", tok.Expiry, tc.expiry)
		})
	}
}

func TestCommandFailuresAreClear(t *testing.T) {
	src := &source.Command{Command: []string{"sh", "-c", "echo 'Please run az login to setup account.' >&2; exit 1"}}
	_, err := src.Token()
	require.ErrorIs(t, err, source.ErrNoToken)
	assert.Contains(t, err.Error(), "Please run az login")
	assert.Contains(t, err.Error(), "exit status 1")

	// What az prints when its refresh token has expired: warnings and a
	// traceback-like tail around the one line that says what to do.
	noisy := `echo 'WARNING: The default kind for created storage account will change' >&2
echo 'WARNING: A Cloud Shell credential problem occurred.' >&2
echo 'ERROR: AADSTS700082: The refresh token has expired due to inactivity.' >&2
echo "Interactive authentication is needed. Please run:" >&2
echo 'az login --scope api://clusterconnect-server/.default' >&2
for i in $(seq 200); do echo "  File \"/opt/az/lib/python3.12/site-packages/azure/cli/core/auth.py\", line $i" >&2; done
exit 1`
	_, err = (&source.Command{Command: []string{"sh", "-c", noisy}}).Token()
	require.ErrorIs(t, err, source.ErrNoToken)
	assert.Contains(t, err.Error(), "ERROR: AADSTS700082: The refresh token has expired due to inactivity.")
	assert.Contains(t, err.Error(), "az login --scope api://clusterconnect-server/.default", "and what to run about it")
	assert.NotContains(t, err.Error(), "WARNING")
	assert.NotContains(t, err.Error(), "auth.py")

	_, err = (&source.Command{Command: []string{"sh", "-c", `echo '{"accessToken":""}'`}}).Token()
	assert.ErrorContains(t, err, "no accessToken")

	_, err = (&source.Command{Command: []string{"no-such-command-anywhere"}}).Token()
	assert.ErrorIs(t, err, source.ErrNoToken)

	_, err = (&source.Command{Command: []string{"sleep", "10"}, Timeout: 50 * time.Millisecond}).Token()
	assert.ErrorContains(t, err, "deadline exceeded")

	secret := filepath.Join(t.TempDir(), "out")
	require.NoError(t, os.WriteFile(secret, []byte(`{"accessToken": "secret-token-value", "expiresOn": 12`), 0o600))
	_, err = (&source.Command{Command: []string{"cat", secret}}).Token()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "secret-token-value", "errors never quote the output")
}

// countingSource hands out numbered tokens expiring at the given time.
type countingSource struct {
	calls  atomic.Int32
	expiry func() time.Time
	gate   chan struct{}
}

func (s *countingSource) Token() (*oauth2.Token, error) {
	n := s.calls.Add(1)
	if s.gate != nil {
		<-s.gate
	}
	return &oauth2.Token{AccessToken: fmt.Sprint("token-", n), Expiry: s.expiry()}, nil
}

func TestCachedRefreshesBeforeExpiry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		want     []string
	}{
		{"an hour left: reused", time.Hour, []string{"token-1", "token-1", "token-1"}},
		{"inside the 5-minute margin: fetched anew", 4 * time.Minute, []string{"token-1", "token-2", "token-3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &countingSource{expiry: func() time.Time { return time.Now().Add(tc.lifetime) }}
			cached := source.Cached(src, 5*time.Minute)
			var got []string
			for range tc.want {
				tok, err := cached.Token()
				require.NoError(t, err)
				got = append(got, tok.AccessToken)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestCachedSharesOneFetch(t *testing.T) {
	src := &countingSource{expiry: func() time.Time { return time.Now().Add(time.Hour) }, gate: make(chan struct{})}
	cached := source.Cached(src, 0)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := cached.Token()
			assert.NoError(t, err)
			assert.Equal(t, "token-1", tok.AccessToken)
		}()
	}
	require.Eventually(t, func() bool { return src.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	close(src.gate)
	wg.Wait()
	assert.EqualValues(t, 1, src.calls.Load())
}

// The command's token is reused across calls: the command runs once.
func TestCachedCommandRunsOnce(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	script := fmt.Sprintf(`echo x >> %s; echo '{"access_token":"t","expires_in":3600}'`, count)
	cached := source.Cached(&source.Command{Command: []string{"sh", "-c", script}}, 0)
	for range 5 {
		tok, err := cached.Token()
		require.NoError(t, err)
		assert.Equal(t, "t", tok.AccessToken)
	}
	b, err := os.ReadFile(count)
	require.NoError(t, err)
	assert.Equal(t, 1, strings.Count(string(b), "x"))
}
