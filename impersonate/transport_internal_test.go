package impersonate

import (
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

func get(t *testing.T, rt http.RoundTripper, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

func TestOrdinaryRequestsGoOnTheProjectsHTTP2Client(t *testing.T) {
	env := kubetest.Shared(t)
	rt, err := newTransport(env.RESTConfig(), mustParse(t, env.Host))
	require.NoError(t, err)
	own, ok := rt.(*httpx.SplitTransport).HTTP2.(*preferOwn)
	require.True(t, ok, "a config with a bearer token and a CA goes on the project's client")

	resp, body := get(t, rt, env.Host+"/api/v1/namespaces/default")
	assert.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Equal(t, 2, resp.ProtoMajor)
	assert.Contains(t, body, `"name":"default"`, "the admin's credentials went with the request")
	assert.False(t, own.own.NotHTTP2())
	assert.Equal(t, 1, own.own.Conns(), "the request went on the project's client")
}

func TestConfigsOnlyClientGoServesKeepItsTransport(t *testing.T) {
	env := kubetest.Shared(t)
	for name, change := range map[string]func(*rest.Config){
		"a proxy": func(rc *rest.Config) { rc.Proxy = http.ProxyFromEnvironment },
		"a credential plugin": func(rc *rest.Config) {
			rc.ExecProvider = &clientcmdapi.ExecConfig{Command: "true", APIVersion: "client.authentication.k8s.io/v1"}
		},
		"client certificate files": func(rc *rest.Config) { rc.CertFile, rc.KeyFile = "tls.crt", "tls.key" },
		"plain HTTP":               func(rc *rest.Config) { rc.Host = "http://127.0.0.1:1" },
	} {
		t.Run(name, func(t *testing.T) {
			rc := env.RESTConfig()
			change(rc)
			own, err := ownTransport(rc, mustParse(t, rc.Host), http.DefaultTransport)
			require.NoError(t, err)
			assert.Nil(t, own)
		})
	}
}

func TestAnAPIServerWithoutHTTP2IsReachedOverClientGos(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" "+r.Header.Get("Authorization"))
	}))
	srv.EnableHTTP2 = false
	srv.StartTLS()
	defer srv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	rt, err := newTransport(&rest.Config{Host: srv.URL, BearerToken: "t0ken", TLSClientConfig: rest.TLSClientConfig{CAData: ca, ServerName: "example.com"}}, mustParse(t, srv.URL))
	require.NoError(t, err)
	own, ok := rt.(*httpx.SplitTransport).HTTP2.(*preferOwn)
	require.True(t, ok)

	for range 2 {
		resp, body := get(t, rt, srv.URL+"/version")
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "HTTP/1.1 Bearer t0ken", body)
	}
	assert.True(t, own.own.NotHTTP2())
}

// A watch whose API server goes away ends with an error, not the clean
// end of a watch the server closed: through the agent, a clean end would
// reach kubectl as a watch that simply finished.
func TestAWatchWhoseAPIServerGoesAwayEndsInAnError(t *testing.T) {
	env, err := kubetest.Start(t.Context())
	require.NoError(t, err)
	stopped := false
	defer func() {
		if !stopped {
			env.Stop()
		}
	}()
	rt, err := newTransport(env.RESTConfig(), mustParse(t, env.Host))
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodGet, env.Host+"/api/v1/namespaces/default/configmaps?watch=1", nil)
	require.NoError(t, err)
	resp, err := rt.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, 1, rt.(*httpx.SplitTransport).HTTP2.(*preferOwn).own.Conns(), "the watch is on the project's client")

	env.Stop()
	stopped = true
	_, err = io.Copy(io.Discard, resp.Body)
	require.Error(t, err, "the watch's end must not read as the server closing it")
	assert.Contains(t, err.Error(), "the API server")
}

func mustParse(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	require.NoError(t, err)
	return u
}
