package login_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
	"github.com/clusterconnect/clusterconnect/tokens/login"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// A client proxy whose user signs in with a device code, as
// az connectedk8s proxy's users do with az login. The person's part (a
// browser, the code) is played by an Entra ID stand-in; a relay stand-in
// says what reached it.
func ExampleOptions_TokenSource() {
	const tenant = "8f7e2a4c-1d3b-4e5f-9a8b-7c6d5e4f3a2b"
	entra, _ := oidctest.Start()
	defer entra.Close()
	entra.AddApp(oidctest.App{ClientID: "04b07795-8ddb-461a-bbee-02f9e1bf7b46", Tenant: tenant, Public: true}) // the Azure CLI's app
	dir, _ := os.MkdirTemp("", "login-example")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "entra-ca.pem"), entra.CA.CertPEM(), 0o600)
	go func() { // the person: a browser, the code, "alice"
		l, _ := entra.NextDeviceLogin(context.Background())
		entra.ApproveDevice(l.UserCode, oidctest.EntraClaims{UPN: "alice@contoso.com"})
	}()

	o := &login.Options{Mode: "devicecode", ServerID: "api://clusterconnect-server", TenantID: tenant,
		AuthorityHost: entra.AuthorityHost(), AuthorityCA: filepath.Join(dir, "entra-ca.pem"), CacheDir: filepath.Join(dir, "tokens")}
	src, err := o.TokenSource()
	if err != nil {
		panic(err)
	}
	relay := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s with a bearer token: %t", r.URL.Path, strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ey"))
	}))
	defer relay.Close()
	p, err := clientproxy.New(&clientproxy.Config{RelayURL: relay.URL, ClusterID: "prod-eu", TokenSource: src,
		RelayTLS: relay.Client().Transport.(*http.Transport).TLSClientConfig, CertDir: dir})
	if err != nil {
		panic(err)
	}
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/pods", nil)) // kubectl get pods
	fmt.Println(rec.Body.String())
	// Output: /clusters/prod-eu/api/v1/pods with a bearer token: true
}
