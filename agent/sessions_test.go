package agent_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/agent"
	"github.com/clusterconnect/clusterconnect/sessions/reattach"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// The agent keeps exec, attach and port-forward sessions for the caller
// that opened them: a carrier without a token is refused before anything
// is held, the session's request is served as its caller, and another
// caller naming the session is refused as if it did not exist.
func TestSessionsAreTheCallers(t *testing.T) {
	entra, err := oidctest.Start()
	require.NoError(t, err)
	defer entra.Close()
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenant}, Audiences: []string{"api://demo"}, DiscoveryURL: entra.EntraDiscoveryURL})
	require.NoError(t, err)
	verifier, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: entra.Client()})
	require.NoError(t, err)
	tokenOf := func(upn, oid string) string {
		tok, err := entra.EntraToken(oidctest.EntraClaims{Tenant: tenant, Audience: "api://demo", UPN: upn, OID: oid, Expiry: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		return tok
	}
	apiserver := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s as %s", r.URL.Path, r.Header.Get("Impersonate-User"))
	}))
	defer apiserver.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	relay, front := relayKnowing("prod-eu", key.Public())
	defer front.Close()
	a, err := agent.New(&agent.Config{
		RelayURL: front.URL, ClusterID: "prod-eu", RelayTLS: front.Client().Transport.(*http.Transport).TLSClientConfig,
		Credential: &agent.KeyFile{Path: writeKey(key), ClusterID: "prod-eu"}, Verifier: verifier,
		RESTConfig: &rest.Config{Host: apiserver.URL, TLSClientConfig: rest.TLSClientConfig{CAData: certPEM(apiserver)}},
	})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go a.Run(ctx)
	require.Eventually(t, func() bool { return relay.Connected("prod-eu") }, 10*time.Second, 10*time.Millisecond)

	// dialCarrier opens a carrier through the relay with token. It is
	// also the session's way back, after the test too: no require in it.
	dialCarrier := func(token string) (net.Conn, *http.Response, error) {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(front.URL, "https://"), &tls.Config{RootCAs: front.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, NextProtos: []string{"http/1.1"}})
		if err != nil {
			return nil, nil, err
		}
		req, _ := http.NewRequest(http.MethodGet, front.URL+"/clusters/prod-eu/api/v1/namespaces/ns/pods/p/exec", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", reattach.Protocol)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if err := req.Write(conn); err != nil {
			conn.Close()
			return nil, nil, err
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		return &readConn{Conn: conn, r: br}, resp, nil
	}
	carrier := func(token string) (net.Conn, *http.Response) {
		conn, resp, err := dialCarrier(token)
		require.NoError(t, err)
		return conn, resp
	}

	_, resp := carrier("")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "no token, no carrier")
	_, resp = carrier("not-a-token")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	alice := tokenOf("alice@contoso.com", "oid-alice")
	session, err := reattach.Dial(ctx, func(context.Context, string) (net.Conn, error) {
		conn, resp, err := dialCarrier(alice)
		if err == nil && resp.StatusCode != http.StatusSwitchingProtocols {
			conn.Close()
			err = fmt.Errorf("carrier: %s", resp.Status)
		}
		return conn, err
	}, &reattach.Config{Grace: time.Second})
	require.NoError(t, err)
	defer session.Close()
	fmt.Fprintf(session, "GET /api/v1/namespaces/ns/pods HTTP/1.1\r\nHost: cluster\r\nAuthorization: Bearer %s\r\n\r\n", alice)
	answer, err := http.ReadResponse(bufio.NewReader(session), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(answer.Body)
	assert.Equal(t, "/api/v1/namespaces/ns/pods as alice@contoso.com", string(body), "the session's request is served as its caller")

	// Bob names Alice's session: refused, in the words an unknown
	// session gets.
	refusal := func(token string, id reattach.SessionID) string {
		conn, resp := carrier(token)
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		defer conn.Close()
		hello := append([]byte{1, 0, 0, 24}, id[:]...)
		hello = binary.BigEndian.AppendUint64(hello, 0)
		_, err := conn.Write(hello)
		require.NoError(t, err)
		got, _ := io.ReadAll(conn)
		require.NotEmpty(t, got)
		require.Equal(t, byte(3), got[0], "REFUSED")
		return string(got[4:])
	}
	bob := tokenOf("bob@contoso.com", "oid-bob")
	var unknown reattach.SessionID
	unknown[0] = 1
	assert.Equal(t, refusal(bob, unknown), refusal(bob, session.ID()), "Bob cannot tell Alice's session from none")
	assert.Equal(t, 1, a.Sessions(), "Alice's session is still there")
}

type readConn struct {
	net.Conn
	r io.Reader
}

func (c *readConn) Read(p []byte) (int, error) { return c.r.Read(p) }
