package impersonate_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/impersonate"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// seen is what reached the API server stand-in: the headers and, once the
// body was read, the trailers.
type seen struct {
	header, trailer http.Header
	body            string
}

// recorder is a Handler in front of an httptest server that records every
// request instead of being a real API server, so that the header
// discipline is checked where no etcd or kube-apiserver is installed, and
// so that what the real API server would ignore (trailers, front-proxy
// headers) is seen too.
type recorder struct {
	issuer  *oidctest.Issuer
	handler *httptest.Server

	mu   sync.Mutex
	reqs []seen
}

const agentToken = "the-agents-own-token"

func newRecorder(t *testing.T, tweak func(*impersonate.Config)) *recorder {
	is, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(is.Close)
	rec := &recorder{issuer: is}
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			rec.mu.Lock()
			rec.reqs = append(rec.reqs, seen{header: r.Header.Clone()})
			rec.mu.Unlock()
			echoUpgrade(w)
			return
		}
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{header: r.Header.Clone(), trailer: r.Trailer.Clone(), body: string(body)})
		rec.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"APIVersions"}`)
	}))
	t.Cleanup(api.Close)

	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenantA}, Audiences: []string{clientID}, DiscoveryURL: is.EntraDiscoveryURL})
	require.NoError(t, err)
	v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: is.Client()})
	require.NoError(t, err)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	cfg := &impersonate.Config{
		RESTConfig: &rest.Config{Host: api.URL, BearerToken: agentToken, TLSClientConfig: rest.TLSClientConfig{CAData: ca}},
		Verifier:   v,
		Mapping:    tokens.EntraMapping(),
	}
	if tweak != nil {
		tweak(cfg)
	}
	h, err := impersonate.New(cfg)
	require.NoError(t, err)
	rec.handler = httptest.NewTLSServer(h)
	t.Cleanup(rec.handler.Close)
	return rec
}

// echoUpgrade switches protocols and echoes one line, as a stand-in for a
// kubelet's exec stream.
func echoUpgrade(w http.ResponseWriter) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	brw.Flush()
	line, _ := brw.ReadString('\n')
	brw.WriteString("echo: " + line)
	brw.Flush()
}

func (r *recorder) token(t *testing.T, u user, tweak func(*oidctest.EntraClaims)) string {
	c := oidctest.EntraClaims{Tenant: tenantA, Audience: clientID, UPN: u.upn, OID: u.oid, Subject: "sub-" + u.oid, Groups: u.groups, Scope: "user_impersonation"}
	if tweak != nil {
		tweak(&c)
	}
	raw, err := r.issuer.EntraToken(c)
	require.NoError(t, err)
	return raw
}

func (r *recorder) seen() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.reqs...)
}

type answer struct {
	code    int
	message string
}

// do sends req over HTTP/1.1 (so trailers and any header spelling go out
// as written) and reads the Status message of a refusal.
func (r *recorder) do(t *testing.T, req *http.Request) answer {
	tr := r.handler.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var st struct{ Kind, Message string }
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		require.NoError(t, json.Unmarshal(body, &st), "a refusal is a Status: %s", body)
		assert.Equal(t, "Status", st.Kind)
	}
	return answer{resp.StatusCode, st.Message}
}

// Only the handler's own credential and the identity it set reach the API
// server; whatever the caller put in trailers is dropped.
func TestRequestTrailersNeverReachTheAPIServer(t *testing.T) {
	r := newRecorder(t, nil)
	body := io.MultiReader(strings.NewReader("{}")) // unknown length: chunked, with trailers
	req, err := http.NewRequest(http.MethodPost, r.handler.URL+"/api/v1/namespaces", body)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+r.token(t, alice, nil))
	req.Trailer = http.Header{
		"Authorization":       {"Bearer admin-token"},
		"Impersonate-User":    {"system:admin"},
		"Impersonate-Group":   {"system:masters"},
		"X-Remote-User":       {"system:admin"},
		"X-Remote-Group":      {"system:masters"},
		"X-Remote-Extra-Team": {"root"},
		"Grpc-Status":         {"0"},
	}
	assert.Equal(t, http.StatusOK, r.do(t, req).code)

	got := r.seen()
	require.Len(t, got, 1)
	assert.Equal(t, "{}", got[0].body)
	assert.Empty(t, got[0].trailer, "no request trailer is forwarded")
	assert.Equal(t, []string{"Bearer " + agentToken}, got[0].header.Values("Authorization"))
	assert.Equal(t, []string{alice.upn}, got[0].header.Values("Impersonate-User"))
	assert.Equal(t, alice.groups, got[0].header.Values("Impersonate-Group"))
	assert.Empty(t, got[0].header.Values("Trailer"))
}

func TestFrontProxyIdentityHeadersAreRemoved(t *testing.T) {
	r := newRecorder(t, nil)
	req, err := http.NewRequest(http.MethodGet, r.handler.URL+"/api/v1/namespaces", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+r.token(t, alice, nil))
	req.Header["X-Remote-User"] = []string{"system:admin"}
	req.Header["x-remote-group"] = []string{"system:masters"}
	req.Header["X-Remote-Extra-Scopes"] = []string{"everything"}
	req.Header["X-REMOTE-EXTRA-team"] = []string{"root"}
	assert.Equal(t, http.StatusOK, r.do(t, req).code)

	got := r.seen()
	require.Len(t, got, 1)
	for k := range got[0].header {
		assert.False(t, strings.HasPrefix(strings.ToLower(k), "x-remote-"), "%s reached the API server", k)
	}
}

// Without nested impersonation, kubectl --as must not run as the caller
// while the user believes it ran as someone else: it is refused.
func TestImpersonationHeadersRefusedWhenNestedIsOff(t *testing.T) {
	r := newRecorder(t, nil)
	for _, h := range []http.Header{
		{"Impersonate-User": {"system:admin"}},
		{"impersonate-group": {"system:masters"}},
		{"Impersonate-Uid": {"0"}},
		{"Impersonate-Extra-Scopes": {"everything"}},
		{"Connection": {"Impersonate-User"}, "Impersonate-User": {"system:admin"}},
	} {
		req, err := http.NewRequest(http.MethodGet, r.handler.URL+"/api/v1/namespaces", nil)
		require.NoError(t, err)
		for k, v := range h {
			req.Header[k] = v
		}
		req.Header.Set("Authorization", "Bearer "+r.token(t, bob, nil))
		a := r.do(t, req)
		assert.Equal(t, http.StatusForbidden, a.code, "%v", h)
		assert.Contains(t, a.message, "nested impersonation (kubectl --as, --as-group, --as-uid) is not enabled for this cluster")
	}
	assert.Empty(t, r.seen(), "no request was forwarded")
}

func TestIdentityIsBounded(t *testing.T) {
	groups := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%08d-0000-0000-0000-000000000000", i)
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		groups    int
		maxBytes  int
		maxGroups int
		want      int
		message   string
	}{
		{"200 groups, as many as Entra ID puts in a token", 200, 0, 0, http.StatusOK, ""},
		{"1,000 groups", 1000, 0, 0, http.StatusForbidden, "the identity has 1000 groups, more than the 256 this cluster accepts"},
		{"over a configured group limit", 11, 0, 10, http.StatusForbidden, "the identity has 11 groups, more than the 10 this cluster accepts"},
		{"over a configured byte limit", 50, 2048, 0, http.StatusForbidden, "bytes of impersonation headers, more than the 2048 this cluster accepts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRecorder(t, func(c *impersonate.Config) { c.MaxIdentityBytes = tc.maxBytes; c.MaxGroups = tc.maxGroups })
			req, err := http.NewRequest(http.MethodGet, r.handler.URL+"/api/v1/namespaces", nil)
			require.NoError(t, err)
			u := user{upn: "many@contoso.com", oid: "oid-many", groups: groups(tc.groups)}
			req.Header.Set("Authorization", "Bearer "+r.token(t, u, nil))
			a := r.do(t, req)
			require.Equal(t, tc.want, a.code, a.message)
			if tc.want != http.StatusOK {
				assert.Contains(t, a.message, tc.message)
				assert.Empty(t, r.seen(), "never a partial identity")
				return
			}
			got := r.seen()
			require.Len(t, got, 1)
			assert.Len(t, got[0].header.Values("Impersonate-Group"), tc.groups)
		})
	}
}

// client-go reads /api and /apis with Result.Raw, which shows only a text
// error body: a JSON Status there would reach the user as "unknown".
func TestDiscoveryRefusalsAreText(t *testing.T) {
	r := newRecorder(t, nil)
	for _, path := range []string{"/api", "/apis", "/apis/", "/version"} {
		req, err := http.NewRequest(http.MethodGet, r.handler.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+r.token(t, bob, nil))
		req.Header.Set("Impersonate-User", "dave@contoso.com")
		resp, err := r.handler.Client().Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, path)
		assert.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"), path)
		assert.Contains(t, string(body), "nested impersonation", path)
	}
}

// An upgrade (kubectl exec, port-forward) gets the same header discipline
// as any request, and the stream is spliced through.
func TestUpgradesGetTheSameHeaderDiscipline(t *testing.T) {
	r := newRecorder(t, nil)
	conn, err := tls.Dial("tcp", r.handler.Listener.Addr().String(), r.handler.Client().Transport.(*http.Transport).TLSClientConfig)
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/namespaces/ns/pods/p/exec?command=sh HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n"+
		"Authorization: Bearer %s\r\nX-Remote-User: system:admin\r\nX-Forwarded-For: 10.0.0.1\r\n"+
		"Sec-WebSocket-Protocol: base64url.bearer.authorization.k8s.io.c2VjcmV0, v5.channel.k8s.io\r\n\r\n", r.token(t, alice, nil))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	fmt.Fprint(conn, "hello\n")
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo: hello\n", line)

	got := r.seen()
	require.Len(t, got, 1)
	h := got[0].header
	assert.Equal(t, []string{"Bearer " + agentToken}, h.Values("Authorization"))
	assert.Equal(t, []string{alice.upn}, h.Values("Impersonate-User"))
	assert.Empty(t, h.Values("X-Remote-User"))
	assert.Empty(t, h.Values("X-Forwarded-For"))
	assert.Equal(t, []string{"v5.channel.k8s.io"}, h.Values("Sec-Websocket-Protocol"), "the bearer subprotocol is removed, the rest kept")
}

// A request the handler cannot give an identity never leaves it.
func TestFailsClosedWithoutIdentity(t *testing.T) {
	r := newRecorder(t, nil)
	for name, tweak := range map[string]func(*oidctest.EntraClaims){
		"no username claim": func(c *oidctest.EntraClaims) { c.UPN, c.OID, c.Subject = "", "", "" },
		"a reserved name":   func(c *oidctest.EntraClaims) { c.UPN = "system:admin" },
		"groups overage":    func(c *oidctest.EntraClaims) { c.GroupsOverage = true },
	} {
		req, err := http.NewRequest(http.MethodGet, r.handler.URL+"/api/v1/namespaces", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+r.token(t, alice, tweak))
		assert.Equal(t, http.StatusUnauthorized, r.do(t, req).code, name)
	}
	assert.Empty(t, r.seen(), "nothing was forwarded")
}
