package clientproxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
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
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/kubeconfig"
	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
	"github.com/clusterconnect/clusterconnect/sessions/reattach"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// The test binary doubles as an exec credential plugin for kubectl.
func TestMain(m *testing.M) {
	if tok := os.Getenv("CLUSTERCONNECT_TEST_PLUGIN_TOKEN"); tok != "" {
		out, err := kubeconfig.ExecCredential(source.Static(tok))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(out)
		os.Exit(0)
	}
	kubetest.Main(m) // removes the home kubectl was given
}

// relay is a stand-in relay that records what reaches it; it is also the
// agent's end of the sessions that upgrades ride on.
type relay struct {
	srv      *httptest.Server
	sessions *reattach.Server
	mu       sync.Mutex
	seen     []seenRequest
	carriers []net.Conn
	event    chan string
	expire   chan struct{} // ends the first of a resumable watch
	refuse   atomic.Bool   // refuse every token, as when it has expired
	// noSessions: the cluster's agent keeps no sessions (an embedder's
	// own); a carrier's upgrade reaches the API server, which refuses it.
	noSessions atomic.Bool
	// stepUp: execs and writes to Secrets need a token "stepped"; others
	// get a claims challenge for c1.
	stepUp atomic.Bool
	bodies []string // of the requests with one, as they arrived
}

type seenRequest struct{ path, auth string }

func newRelay(t testing.TB) *relay {
	r := &relay{event: make(chan string), expire: make(chan struct{})}
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	r.srv.EnableHTTP2 = true
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)
	r.sessions = reattach.NewServer(nil)
	inner := &http.Server{Handler: http.HandlerFunc(r.serve), ErrorLog: log.New(io.Discard, "", 0)}
	go inner.Serve(r.sessions)
	t.Cleanup(func() { r.sessions.Close() })
	return r
}

// carrier takes a session's carrier, as the agent would, keeping it so
// that a test can cut it.
func (r *relay) carrier(w http.ResponseWriter, req *http.Request) {
	conn, brw, _ := http.NewResponseController(w).Hijack()
	fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+reattach.Protocol+"\r\n\r\n")
	brw.Flush()
	r.mu.Lock()
	r.carriers = append(r.carriers, conn)
	r.mu.Unlock()
	r.sessions.Serve(conn, req.Header.Get("Authorization"))
}

// cutCarriers closes every carrier, as a relay replica that dies does.
func (r *relay) cutCarriers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.carriers {
		c.Close()
	}
	r.carriers = nil
}

func (r *relay) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.seen = append(r.seen, seenRequest{req.URL.Path, req.Header.Get("Authorization")})
	if req.ContentLength > 0 {
		b, _ := io.ReadAll(req.Body)
		r.bodies = append(r.bodies, string(b))
	}
	r.mu.Unlock()
	switch {
	case r.stepUp.Load() && (strings.HasSuffix(req.URL.Path, "/exec") || strings.Contains(req.URL.Path, "/secrets")) &&
		req.Header.Get("Authorization") != "Bearer stepped":
		w.Header().Set("Www-Authenticate", `Bearer realm="clusterconnect", error="insufficient_claims", claims="`+
			base64.StdEncoding.EncodeToString([]byte(`{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`))+`"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"this cluster asks for a stronger sign-in","reason":"Unauthorized","code":401}`)
	case strings.Contains(req.URL.Path, "/watch/"):
		// A watch the relay ends at the token's expiry in words a client
		// that renews may resume past; resumed, it goes on.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		w.(http.Flusher).Flush() // a stream, as a watch's is
		pod := `{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p%s","resourceVersion":"%s"}}}` + "\n"
		if req.URL.Query().Get("resourceVersion") != "5" {
			fmt.Fprintf(w, pod, "5", "5")
			w.(http.Flusher).Flush()
			select {
			case <-r.expire:
			case <-req.Context().Done():
				return
			}
			fmt.Fprintln(w, `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the token expired","reason":"Unauthorized","code":401,`+
				`"details":{"causes":[{"reason":"ClusterconnectResumable","message":"resume"}]}}}`)
			return
		}
		fmt.Fprintf(w, pod, "6", "6")
		w.(http.Flusher).Flush()
		<-req.Context().Done()
	case strings.HasSuffix(req.URL.Path, "/watch"):
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for ev := range r.event {
			fmt.Fprintln(w, ev)
			w.(http.Flusher).Flush()
		}
	case strings.HasSuffix(req.URL.Path, "/refused") || r.refuse.Load():
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the token expired at 2026-11-24T00:00:00Z","reason":"Unauthorized","code":401}`)
	case reattach.IsUpgrade(req) && r.noSessions.Load():
		http.Error(w, "unable to upgrade: header X-Stream-Protocol-Version does not exist in request with 5 headers", http.StatusBadRequest)
	case reattach.IsUpgrade(req):
		r.carrier(w, req)
	case req.Header.Get("Upgrade") == "echo/1":
		conn, brw, _ := http.NewResponseController(w).Hijack()
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprint(conn, "echo: "+line)
		}
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":null}`)
	}
}

func (r *relay) last() seenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[len(r.seen)-1]
}

func (r *relay) tls() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(r.srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

func (r *relay) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.srv.Certificate().Raw})
}

// running is a started client proxy.
type running struct {
	p   *clientproxy.Proxy
	url string
}

func start(t testing.TB, r *relay, tweak func(*clientproxy.Config)) *running {
	cfg := &clientproxy.Config{
		RelayURL: r.srv.URL, ClusterID: "c1", RelayTLS: r.tls(),
		TokenSource: source.Static("user-token"), CertDir: t.TempDir(),
	}
	if tweak != nil {
		tweak(cfg)
	}
	p, err := clientproxy.New(cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &running{p: p, url: "https://" + ln.Addr().String()}
}

func (rp *running) client() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rp.p.CAPEM())
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
}

func get(t *testing.T, rp *running, path, auth string) (*http.Response, string) {
	req, _ := http.NewRequest(http.MethodGet, rp.url+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := rp.client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestAddsTheUsersTokenAndDropsTheClients(t *testing.T) {
	r := newRelay(t)
	rp := start(t, r, nil)
	resp, _ := get(t, rp, "/api/v1/namespaces?limit=1", "Bearer "+kubeconfig.ProxyTokenPlaceholder)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, seenRequest{"/clusters/c1/api/v1/namespaces", "Bearer user-token"}, r.last())

	resp, _ = get(t, rp, "/clusters/c2/api", "")
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, seenRequest{"/clusters/c2/api", "Bearer user-token"}, r.last(), "a context may name another cluster")
}

func TestPicksUpARenewedToken(t *testing.T) {
	r := newRelay(t)
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte("first-token"), 0o600))
	rp := start(t, r, func(c *clientproxy.Config) { c.TokenSource = source.File(file) })
	get(t, rp, "/api", "")
	assert.Equal(t, "Bearer first-token", r.last().auth)
	require.NoError(t, os.WriteFile(file, []byte("renewed-token-value"), 0o600))
	get(t, rp, "/api", "")
	assert.Equal(t, "Bearer renewed-token-value", r.last().auth)
}

// A watch the relay ended at its token's expiry, resumably (sessionExpiry
// "renew" when the renewal reached another replica), is resumed by the
// proxy with the user's token as it is now.
func TestAWatchResumesWithTheCurrentToken(t *testing.T) {
	r := newRelay(t)
	file := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(file, []byte("first-token"), 0o600))
	rp := start(t, r, func(c *clientproxy.Config) { c.TokenSource = source.File(file) })
	resp, err := rp.client().Get(rp.url + "/api/v1/watch/pods?resourceVersion=1")
	require.NoError(t, err)
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	require.True(t, lines.Scan())
	assert.Contains(t, lines.Text(), `"name":"p5"`)
	require.NoError(t, os.WriteFile(file, []byte("renewed-token-value"), 0o600))
	r.expire <- struct{}{}
	require.True(t, lines.Scan(), "the watch goes on")
	assert.Contains(t, lines.Text(), `"name":"p6"`, "resumed, past the ERROR event")
	last := r.last()
	assert.Equal(t, "Bearer renewed-token-value", last.auth, "with the current token")
}

func TestPassClientTokenMode(t *testing.T) {
	r := newRelay(t)
	rp := start(t, r, func(c *clientproxy.Config) { c.TokenSource = nil; c.PassClientToken = true })
	get(t, rp, "/api", "Bearer service-account-token")
	assert.Equal(t, "Bearer service-account-token", r.last().auth)
}

func TestWatchStreamsThroughTheProxy(t *testing.T) {
	r := newRelay(t)
	rp := start(t, r, nil)
	resp, err := rp.client().Get(rp.url + "/api/v1/pods/watch")
	require.NoError(t, err)
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for i := range 3 {
		ev := fmt.Sprintf(`{"type":"ADDED","n":%d}`, i)
		r.event <- ev
		require.True(t, lines.Scan())
		assert.Equal(t, ev, lines.Text())
	}
	close(r.event)
}

// upgradeExec sends an exec's upgrade (echo/1) through the proxy and
// returns the upgraded connection once the proxy answered 101.
func upgradeExec(t *testing.T, rp *running) (net.Conn, *bufio.Reader) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rp.p.CAPEM())
	conn, err := tls.Dial("tcp", strings.TrimPrefix(rp.url, "https://"), &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	fmt.Fprint(conn, "GET /api/v1/namespaces/ns/pods/p/exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	return conn, br
}

func TestUpgradeRoundTrip(t *testing.T) {
	r := newRelay(t)
	rp := start(t, r, nil)
	conn, br := upgradeExec(t, rp)
	fmt.Fprint(conn, "hello through the proxy\n")
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo: hello through the proxy\n", line)
	assert.Equal(t, "Bearer user-token", r.last().auth)
	assert.Equal(t, "/api/v1/namespaces/ns/pods/p/exec", r.last().path, "the upgrade reaches the agent's end without the cluster prefix")

	// The relay goes (every carrier cut): the upgraded connection goes on.
	for i := range 3 {
		r.cutCarriers()
		fmt.Fprintf(conn, "after cut %d\n", i)
		line, err = br.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("echo: after cut %d\n", i), line)
	}
}

// An agent that keeps no sessions still gets its upgrades: as they are.
func TestUpgradeToAnAgentWithoutSessions(t *testing.T) {
	r := newRelay(t)
	r.noSessions.Store(true)
	rp := start(t, r, nil)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rp.p.CAPEM())
	conn, err := tls.Dial("tcp", strings.TrimPrefix(rp.url, "https://"), &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprint(conn, "GET /api/v1/namespaces/ns/pods/p/exec HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	fmt.Fprint(conn, "no session\n")
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo: no session\n", line)
	assert.Equal(t, "/clusters/c1/api/v1/namespaces/ns/pods/p/exec", r.last().path, "the upgrade itself went to the relay")
}

func status(t *testing.T, body string) (msg string) {
	var st struct{ Kind, Message string }
	require.NoError(t, json.Unmarshal([]byte(body), &st), body)
	assert.Equal(t, "Status", st.Kind)
	return st.Message
}

func TestRelayDownIsALegibleError(t *testing.T) {
	r := newRelay(t)
	rp := start(t, r, nil)
	r.srv.Close()
	resp, body := get(t, rp, "/api/v1/namespaces", "")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
	assert.Contains(t, status(t, body), "cannot reach the relay at 127.0.0.1")

	// kubectl's first step, discovery, shows the message too.
	res, err := kubectlFor(t, rp).Run(testContext(t), nil, "get", "namespaces")
	require.NoError(t, err)
	assert.NotEqual(t, 0, res.ExitCode)
	assert.Contains(t, res.Stderr, "cannot reach the relay at 127.0.0.1")
}

func TestTokenCommandFailureIsALegibleError(t *testing.T) {
	r := newRelay(t)
	rp := start(t, r, func(c *clientproxy.Config) {
		c.TokenSource = &source.Command{Command: []string{"sh", "-c", "echo 'ERROR: Please run az login to setup account.' >&2; exit 1"}}
	})
	resp, body := get(t, rp, "/api/v1/namespaces", "")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Contains(t, status(t, body), "Please run az login")
	resp, body = get(t, rp, "/api", "")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "on discovery paths, words client-go shows")
	assert.Contains(t, body, "Please run az login")

	// kubectl shows the message.
	k := kubectlFor(t, rp)
	res, err := k.Run(testContext(t), nil, "get", "--raw", "/api")
	require.NoError(t, err)
	assert.NotEqual(t, 0, res.ExitCode)
	assert.Contains(t, res.Stderr, "Please run az login")
}

func TestRefusesNonLoopbackAddresses(t *testing.T) {
	r := newRelay(t)
	p, err := clientproxy.New(&clientproxy.Config{RelayURL: r.srv.URL, ClusterID: "c1", TokenSource: source.Static("t"), CertDir: t.TempDir(), ListenAddr: "0.0.0.0:0"})
	require.NoError(t, err)
	err = p.ListenAndServe(context.Background())
	assert.ErrorContains(t, err, "not a loopback address")
}

func TestCAIsKeptAndPrivate(t *testing.T) {
	r := newRelay(t)
	dir := t.TempDir()
	cfg := &clientproxy.Config{RelayURL: r.srv.URL, ClusterID: "c1", TokenSource: source.Static("t"), CertDir: dir}
	p1, err := clientproxy.New(cfg)
	require.NoError(t, err)
	p2, err := clientproxy.New(cfg)
	require.NoError(t, err)
	assert.Equal(t, p1.CAPEM(), p2.CAPEM(), "a restarted proxy keeps its CA, so kubeconfigs stay valid")
	for _, f := range []string{"ca.key", "ca.crt"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), f)
	}
	onDisk, err := os.ReadFile(p1.CAFile())
	require.NoError(t, err)
	assert.Equal(t, p1.CAPEM(), onDisk, "CAFile names the CA clients are told to trust")
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// kubectlFor writes a proxy-mode kubeconfig for the running proxy.
func kubectlFor(t *testing.T, rp *running) *kubetest.Kubectl {
	path := filepath.Join(t.TempDir(), "config")
	e := kubeconfig.ProxyEntry("c1", 0, rp.p.CAPEM())
	e.Server = rp.url
	_, err := kubeconfig.Merge(kubeconfig.Options{Path: path, SetCurrentContext: true}, e)
	require.NoError(t, err)
	return &kubetest.Kubectl{Kubeconfig: path}
}

func TestKubectlThroughTheProxy(t *testing.T) {
	r := newRelay(t)
	rp := start(t, r, nil)
	out := kubectlFor(t, rp).MustRun(t, testContext(t), nil, "get", "--raw", "/api")
	assert.Contains(t, out, `"kind":"APIVersions"`)
	assert.Equal(t, seenRequest{"/clusters/c1/api", "Bearer user-token"}, r.last())
}

// Direct mode: kubectl talks to the relay itself and runs the exec plugin
// for the token; no proxy process is involved.
func TestKubectlRunsTheExecPluginInDirectMode(t *testing.T) {
	r := newRelay(t)
	e, err := kubeconfig.DirectEntry("c1", r.srv.URL, r.caPEM(), os.Args[0])
	require.NoError(t, err)
	e.Exec.Env = []clientcmdapi.ExecEnvVar{{Name: "CLUSTERCONNECT_TEST_PLUGIN_TOKEN", Value: "token-from-plugin"}}
	path := filepath.Join(t.TempDir(), "config")
	_, err = kubeconfig.Merge(kubeconfig.Options{Path: path, SetCurrentContext: true}, e)
	require.NoError(t, err)
	k := &kubetest.Kubectl{Kubeconfig: path}
	// (get --raw would drop the server URL's path; an ordinary request
	// keeps it, as every real client-go request does.)
	_, err = k.Run(testContext(t), nil, "version", "-o", "json")
	require.NoError(t, err)
	assert.Equal(t, seenRequest{"/clusters/c1/version", "Bearer token-from-plugin"}, r.last())
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A refused token is logged by the proxy with the reason (kubectl shows
// only "You must be logged in" on its discovery paths), once a minute at
// most, and kubectl still gets the whole answer.
func TestRefusedTokenIsLoggedWithTheReason(t *testing.T) {
	var logs syncBuffer
	rp := start(t, newRelay(t), func(c *clientproxy.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	for range 3 {
		resp, body := get(t, rp, "/api/refused", "")
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		assert.Equal(t, "the token expired at 2026-11-24T00:00:00Z", status(t, body))
	}
	assert.Contains(t, logs.String(), `reason="the token expired at 2026-11-24T00:00:00Z"`)
	assert.Equal(t, 1, strings.Count(logs.String(), "your token was refused"), "the same reason once, not per request")
	assert.NotContains(t, logs.String(), "user-token", "never the token")
}

// In proxy mode kubectl holds no credential, and client-go prints fixed
// words for a 401 on its discovery paths ("the server has asked for the
// client to provide credentials"): there the proxy answers with the reason
// as words kubectl shows, for a token it could not get and for one the
// relay refused, with an empty discovery cache as on first use.
func TestKubectlShowsWhyTheTokenFailed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*clientproxy.Config, *relay)
		words string
	}{
		{"token refused upstream", func(_ *clientproxy.Config, r *relay) { r.refuse.Store(true) },
			"the token expired at 2026-11-24T00:00:00Z"},
		{"sign-in failed", func(c *clientproxy.Config, _ *relay) {
			c.TokenSource = &source.Command{Command: []string{"sh", "-c", "echo 'ERROR: AADSTS700082: The refresh token has expired.' >&2; exit 1"}}
		}, "AADSTS700082: The refresh token has expired."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRelay(t)
			rp := start(t, r, func(c *clientproxy.Config) { tc.tweak(c, r) })
			res, err := kubectlFor(t, rp).Run(testContext(t), nil, "get", "namespaces", "--cache-dir", t.TempDir())
			require.NoError(t, err)
			assert.NotEqual(t, 0, res.ExitCode)
			assert.Contains(t, res.Stderr, tc.words)
			t.Logf("kubectl: %s", res.Stderr)

			// Past discovery, a 401 is still a 401 with a Status.
			resp, body := get(t, rp, "/api/v1/namespaces", "")
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			assert.Contains(t, status(t, body), tc.words)
		})
	}
}

// The proxy's own health, apart from the cluster's /healthz that its port
// forwards: ready while the user's token can be had.
func TestHealthHandler(t *testing.T) {
	var fail atomic.Bool
	rp := start(t, newRelay(t), func(c *clientproxy.Config) {
		c.TokenSource = oauth2TokenSourceFunc(func() (*oauth2.Token, error) {
			if fail.Load() {
				return nil, errors.New("ERROR: Please run az login")
			}
			return &oauth2.Token{AccessToken: "t"}, nil
		})
	})
	h := rp.p.HealthHandler()
	code := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	for _, p := range []string{"/livez", "/healthz", "/readyz"} {
		c, _ := code(p)
		assert.Equal(t, http.StatusOK, c, p)
	}
	fail.Store(true)
	c, body := code("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, c)
	assert.Contains(t, body, "Please run az login")
	c, _ = code("/livez")
	assert.Equal(t, http.StatusOK, c, "alive all the same")
}

type oauth2TokenSourceFunc func() (*oauth2.Token, error)

func (f oauth2TokenSourceFunc) Token() (*oauth2.Token, error) { return f() }
