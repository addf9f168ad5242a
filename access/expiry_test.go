package access_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/sessions"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// relayEnv is a relay with the Authorizer as its front door (and its
// renewals at /sessions/renew/{cluster}), and an agent of cluster "prod"
// whose watches send an event each time tick is sent to.
type relayEnv struct {
	*env
	srv    *httptest.Server
	tick   chan struct{}
	lastID string // the request ID of the last watch opened
}

func newRelayEnv(t *testing.T, policy string, tweak ...func(*oidctest.Issuer, *access.Config)) *relayEnv {
	e := &relayEnv{env: newEnv(t, policy, tweak...), tick: make(chan struct{})}
	relay, err := tunnel.NewRelay(&tunnel.RelayConfig{Authenticator: tunnel.SecretAuthenticator{"prod": "s3cret"}, ClientAuthorizer: e.authz,
		Middleware: sessions.Watches})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/", relay)
	mux.Handle("POST /sessions/renew/{cluster}", e.authz.RenewHandler())
	e.srv = httptest.NewUnstartedServer(mux)
	e.srv.EnableHTTP2 = true
	e.srv.StartTLS()
	t.Cleanup(func() { relay.Close(); e.srv.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(e.srv.Certificate())
	agent, err := tunnel.NewAgent(&tunnel.AgentConfig{
		RelayURL: e.srv.URL + tunnel.DefaultAgentPath, ClusterID: "prod", Credential: tunnel.SecretCredential("s3cret"),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json;stream=watch")
			for rv := 1; ; rv++ {
				fmt.Fprintf(w, `{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p%d","resourceVersion":"%d"}}}`+"\n", rv, rv)
				w.(http.Flusher).Flush()
				select {
				case <-e.tick:
				case <-r.Context().Done():
					return
				}
			}
		}),
		TLSConfig: &tls.Config{RootCAs: roots, ServerName: "example.com"},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); agent.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return relay.Connected("prod") }, 10*time.Second, 5*time.Millisecond)
	return e
}

// watch opens a watch with token and session key (if any), and returns
// its events as lines.
func (e *relayEnv) watch(token, key string) *bufio.Reader {
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/clusters/prod/api/v1/pods?watch=true", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "" {
		req.Header.Set(access.HeaderSessionKey, key)
	}
	resp, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { resp.Body.Close() })
	require.Equal(e.t, http.StatusOK, resp.StatusCode)
	e.lastID = resp.Header.Get("Audit-Id")
	lines := bufio.NewReader(resp.Body)
	first, err := lines.ReadString('\n')
	require.NoError(e.t, err)
	require.Contains(e.t, first, `"ADDED"`)
	return lines
}

func (e *relayEnv) renew(token, key string) (int, string) {
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/sessions/renew/prod", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(access.HeaderSessionKey, key)
	resp, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// next reads the next event; ok is false if the stream ended instead.
func next(lines *bufio.Reader) (string, bool) {
	l, err := lines.ReadString('\n')
	return l, err == nil
}

// expiresIn returns a token of caller oid that expires in d (whole
// seconds, as exp counts them).
func (e *relayEnv) expiresIn(oid string, d time.Duration) (string, time.Time) {
	exp := time.Now().Add(d).Truncate(time.Second)
	return e.token(oidctest.EntraClaims{OID: oid, Groups: []string{ops}, Expiry: exp}), exp
}

const expiryPolicy = `{"clusters": {"prod": {"groups": ["` + ops + `"], "sessionExpiry": "%s"}}}`

// With sessionExpiry "end", a watch ends when the token it was opened
// with expires, with an ERROR event saying so.
func TestSessionsEndWhenTheirTokenExpires(t *testing.T) {
	e := newRelayEnv(t, fmt.Sprintf(expiryPolicy, "end"))
	tok, exp := e.expiresIn(alice, 2*time.Second)
	lines := e.watch(tok, "")
	last, ok := next(lines)
	require.True(t, ok)
	assert.Contains(t, last, `"type":"ERROR"`)
	assert.Contains(t, last, "expired at "+exp.UTC().Format(time.RFC3339))
	assert.Contains(t, last, "run the command again")
	assert.False(t, time.Now().Before(exp), "not before the token expired")
	_, ok = next(lines)
	assert.False(t, ok, "and the watch is over")
}

// With sessionExpiry "renew", a fresh token of the same caller presented
// with the sessions' key keeps them past the old token's expiry; one of
// another caller ends them at once, saying so; nobody without the key
// touches them.
func TestRenewedSessionsOutliveTheirFirstToken(t *testing.T) {
	e := newRelayEnv(t, fmt.Sprintf(expiryPolicy, "renew"))
	const key = "0123456789abcdef-client-proxy-key"
	first, exp := e.expiresIn(alice, 2*time.Second)
	lines := e.watch(first, key)

	code, body := e.renew(e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}}), key)
	require.Equal(t, http.StatusOK, code, body)
	var res access.RenewResult
	require.NoError(t, json.Unmarshal([]byte(body), &res))
	assert.Equal(t, 1, res.Renewed)

	// A caller without the key renews and ends nothing.
	code, body = e.renew(e.token(oidctest.EntraClaims{OID: bob, Groups: []string{ops}}), "another-key-of-16-bytes")
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, `"renewed":0`)

	time.Sleep(time.Until(exp) + time.Second) // past the first token's expiry
	e.tick <- struct{}{}
	ev, ok := next(lines)
	require.True(t, ok)
	assert.Contains(t, ev, `"name":"p2"`, "the watch goes on past its first token")

	// Bob's token with the key: the session is Alice's, and ends.
	code, _ = e.renew(e.token(oidctest.EntraClaims{OID: bob, Groups: []string{ops}}), key)
	assert.Equal(t, http.StatusOK, code)
	ev, ok = next(lines)
	require.True(t, ok)
	assert.Contains(t, ev, `"type":"ERROR"`)
	assert.Contains(t, ev, "a token of another caller was presented to renew this session")

	// A carrier that would re-attach it is refused in the same words.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/clusters/prod/api/v1/pods?watch=true", nil)
	req.Header.Set("Authorization", "Bearer "+e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}}))
	req.Header.Set(access.HeaderSessionOf, e.lastID)
	resp, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Contains(t, string(b), "a token of another caller was presented to renew this session")
}

// A renewal with a token the relay refuses ends the key's sessions; a
// renewal without a key or a token is refused and ends nothing.
func TestARefusedRenewalEndsTheSessions(t *testing.T) {
	e := newRelayEnv(t, fmt.Sprintf(expiryPolicy, "renew"))
	const key = "0123456789abcdef-client-proxy-key"
	lines := e.watch(e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}}), key)

	code, body := e.renew("", key)
	assert.Equal(t, http.StatusUnauthorized, code, body)
	code, body = e.renew(e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}}), "short")
	assert.Equal(t, http.StatusBadRequest, code, body)
	e.tick <- struct{}{}
	ev, ok := next(lines)
	require.True(t, ok)
	assert.Contains(t, ev, `"name":"p2"`, "neither touched the session")

	expired := e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}, Expiry: time.Now().Add(-time.Hour)})
	code, _ = e.renew(expired, key)
	assert.Equal(t, http.StatusUnauthorized, code)
	ev, ok = next(lines)
	require.True(t, ok)
	assert.Contains(t, ev, `"type":"ERROR"`)
	assert.True(t, strings.Contains(ev, "the token presented to renew this session was refused"), ev)
}

// What a caller can make the relay hold through renewals: nothing past
// the request. Renewals with tokens the relay refuses and keys nobody
// holds end nothing and leave nothing behind; renewals count against the
// caller's request rate, so one caller cannot make the relay verify and
// look up without bound.
func TestRenewalsAreBoundedAndHoldNothing(t *testing.T) {
	lookups := &countedEnded{}
	e := newRelayEnv(t, `{"clusters": {"prod": {"groups": ["`+ops+`"], "sessionExpiry": "renew", "limits": {"callerRate": 1, "callerBurst": 5}}}}`,
		func(_ *oidctest.Issuer, c *access.Config) { c.EndedSessions = lookups })
	const key = "0123456789abcdef-client-proxy-key"
	alice := e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}})
	lines := e.watch(alice, key)
	before := runtime.NumGoroutine()

	for i := range 200 {
		code, _ := e.renew(fmt.Sprintf("garbage-%d", i), fmt.Sprintf("nobody-holds-this-key-%d", i))
		require.Equal(t, http.StatusUnauthorized, code)
	}
	limited := 0
	for range 20 {
		code, _ := e.renew(alice, "another-key-of-16-bytes")
		if code == http.StatusTooManyRequests {
			limited++
		}
	}
	assert.GreaterOrEqual(t, limited, 14, "past the burst of 5 (one more a second), renewals get 429")
	// Asking whether a session was ended (a re-attaching carrier) may
	// cost an etcd read in a fleet: it counts against the rate too.
	limited = 0
	for i := range 10 {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/clusters/prod/api/v1/pods?watch=true", nil)
		req.Header.Set("Authorization", "Bearer "+alice)
		req.Header.Set(access.HeaderSessionOf, fmt.Sprintf("some-session-%d", i))
		resp, err := e.srv.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
		}
	}
	assert.GreaterOrEqual(t, limited, 8, "re-attaching carriers past the rate get 429")
	assert.LessOrEqual(t, int(lookups.asked.Load()), 10-limited, "…before anything is looked up")
	assert.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+2 }, 10*time.Second, 10*time.Millisecond,
		"goroutines left: %d, %d before", runtime.NumGoroutine(), before)

	e.tick <- struct{}{}
	ev, ok := next(lines)
	require.True(t, ok)
	assert.Contains(t, ev, `"name":"p2"`, "none of it touched Alice's session")
}

// Under "renew", a session whose renewal did not reach the relay that
// holds it (another replica of a fleet got it) ends at its token's expiry
// in words a client that renews can resume past: the watch's ERROR event
// is marked resumable, and a carrier naming the session may re-attach
// with a fresh token, which the relay (and the agent) check anew.
func TestAnExpiredRenewableSessionMayBeResumed(t *testing.T) {
	e := newRelayEnv(t, fmt.Sprintf(expiryPolicy, "renew"))
	tok, _ := e.expiresIn(alice, 2*time.Second)
	lines := e.watch(tok, "0123456789abcdef-client-proxy-key")
	ev, ok := next(lines)
	require.True(t, ok)
	assert.Contains(t, ev, `"type":"ERROR"`)
	assert.Contains(t, ev, "no fresh one was presented for it")
	assert.Contains(t, ev, "ClusterconnectResumable", "a layer in front that renews resumes past it")

	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/clusters/prod/api/v1/pods?watch=true", nil)
	req.Header.Set("Authorization", "Bearer "+e.token(oidctest.EntraClaims{OID: alice, Groups: []string{ops}}))
	req.Header.Set(access.HeaderSessionOf, e.lastID)
	resp, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the session's caller, with a fresh token, goes on")
}

// countedEnded is an EndedSessions that remembers nothing and counts the
// questions: what a fleet's etcd would be asked.
type countedEnded struct{ asked atomic.Int64 }

func (c *countedEnded) NoteEnded(context.Context, string, []byte, time.Time) error { return nil }
func (c *countedEnded) Ended(context.Context, string) ([]byte, error) {
	c.asked.Add(1)
	return nil, nil
}

// A renewal that comes with a body — never read — is refused at once and
// its connection closed: a caller trickling one holds nothing.
func TestARenewalWithABodyIsRefusedAtOnce(t *testing.T) {
	e := newRelayEnv(t, fmt.Sprintf(expiryPolicy, "renew"))
	roots := x509.NewCertPool()
	roots.AddCert(e.srv.Certificate())
	c, err := tls.Dial("tcp", e.srv.Listener.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	defer c.Close()
	fmt.Fprint(c, "POST /sessions/renew/prod HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer garbage\r\n"+
		access.HeaderSessionKey+": 0123456789abcdef-client-proxy-key\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n") // and the body never ends
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	io.Copy(io.Discard, resp.Body)
	_, err = br.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the relay closed the connection")
}
