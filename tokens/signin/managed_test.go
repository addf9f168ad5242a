package signin_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tokens/signin"
)

const (
	vmIdentity   = "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"
	userAssigned = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
)

// A VM's system-assigned identity, a user-assigned one picked by client
// ID, and App Service's endpoint each give a token the cluster's
// verifier accepts as that identity.
func TestManagedIdentity(t *testing.T) {
	e := start(t)
	e.is.AddManagedIdentity(oidctest.ManagedIdentity{ClientID: vmIdentity, ObjectID: "vm-oid", Tenant: tenant, SystemAssigned: true})
	e.is.AddManagedIdentity(oidctest.ManagedIdentity{ClientID: userAssigned, ObjectID: "ua-oid", Tenant: tenant})
	for _, tt := range []struct {
		name string
		m    signin.ManagedIdentity
		oid  string
	}{
		{"IMDS, system-assigned", signin.ManagedIdentity{Resource: serverApp + "/.default", IMDS: e.is.IMDSURL()}, "vm-oid"},
		{"IMDS, user-assigned", signin.ManagedIdentity{Resource: serverApp, ClientID: userAssigned, IMDS: e.is.IMDSURL()}, "ua-oid"},
		{"App Service", signin.ManagedIdentity{Resource: serverApp, Endpoint: e.is.IdentityEndpoint(), Header: oidctest.IdentityHeader}, "vm-oid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.m.HTTPClient = e.is.Client()
			tok, err := tt.m.Fetch(context.Background(), nil)
			require.NoError(t, err)
			assert.Equal(t, tt.oid, e.identity(t, tok))
			assert.WithinDuration(t, time.Now().Add(time.Hour), tok.Expiry, time.Minute)
		})
	}
}

func TestManagedIdentityFailures(t *testing.T) {
	e := start(t)
	e.is.AddManagedIdentity(oidctest.ManagedIdentity{ClientID: vmIdentity, ObjectID: "vm-oid", Tenant: tenant, SystemAssigned: true})

	m := &signin.ManagedIdentity{Resource: serverApp, ClientID: "not-assigned", IMDS: e.is.IMDSURL(), HTTPClient: e.is.Client()}
	_, err := m.Fetch(context.Background(), nil)
	assert.ErrorContains(t, err, "signin: managed identity: invalid_request: Identity not found")

	m = &signin.ManagedIdentity{Resource: serverApp, Endpoint: e.is.IdentityEndpoint(), Header: "wrong", HTTPClient: e.is.Client()}
	_, err = m.Fetch(context.Background(), nil)
	assert.ErrorContains(t, err, "X-IDENTITY-HEADER")

	// IMDS takes only requests with its header: a web page cannot make a
	// browser fetch a token.
	resp, err := e.is.Client().Get(e.is.IMDSURL() + "?api-version=2018-02-01&resource=" + serverApp)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// Not an Azure machine: said at once, not after retries.
	m = &signin.ManagedIdentity{Resource: serverApp, IMDS: "http://127.0.0.1:1/metadata/identity/oauth2/token"}
	_, err = m.Fetch(context.Background(), nil)
	assert.ErrorContains(t, err, "is this an Azure machine with a managed identity?")
}

// IMDS answers 410 while it starts and 429 or 5xx when busy: those are
// asked again, with growing waits, four times at most.
func TestManagedIdentityRetries(t *testing.T) {
	e := start(t)
	e.is.AddManagedIdentity(oidctest.ManagedIdentity{ClientID: vmIdentity, ObjectID: "vm-oid", Tenant: tenant, SystemAssigned: true})
	m := &signin.ManagedIdentity{Resource: serverApp, IMDS: e.is.IMDSURL(), HTTPClient: e.is.Client()}
	signin.SetBackoff(m, time.Millisecond)

	e.is.FailIdentity(http.StatusGone, 3)
	tok, err := m.Fetch(context.Background(), nil)
	require.NoError(t, err)
	assert.Equal(t, "vm-oid", e.identity(t, tok))
	assert.Equal(t, 4, e.is.IdentityRequests())

	e.is.FailIdentity(http.StatusServiceUnavailable, 10)
	_, err = m.Fetch(context.Background(), nil)
	assert.ErrorContains(t, err, "temporarily_unavailable")
	assert.Equal(t, 4+5, e.is.IdentityRequests(), "five tries, then the error")

	e.is.FailIdentity(http.StatusBadRequest, 1)
	_, err = m.Fetch(context.Background(), nil)
	assert.Error(t, err)
	assert.Equal(t, 4+5+1, e.is.IdentityRequests(), "a refusal is not asked again")
}

// An Arc-enabled server's agent answers with a challenge naming a key
// file; the key file is read only where the agent keeps them, so an
// endpoint that names another file learns nothing of it.
func TestManagedIdentityOnArc(t *testing.T) {
	e := start(t)
	e.is.AddManagedIdentity(oidctest.ManagedIdentity{ClientID: vmIdentity, ObjectID: "arc-oid", Tenant: tenant, SystemAssigned: true})
	keys := t.TempDir()
	e.is.SetArcKeyDir(keys)
	m := &signin.ManagedIdentity{Resource: serverApp, Endpoint: e.is.ArcEndpoint(), Arc: true, ArcKeyDir: keys, HTTPClient: e.is.Client()}
	tok, err := m.Fetch(context.Background(), nil)
	require.NoError(t, err)
	assert.Equal(t, "arc-oid", e.identity(t, tok))

	m.ArcKeyDir = t.TempDir() // where this machine's agent would keep them; the endpoint names another
	_, err = m.Fetch(context.Background(), nil)
	assert.ErrorContains(t, err, "not a .key file in "+m.ArcKeyDir)

	m.ArcKeyDir, m.ClientID = keys, userAssigned
	_, err = m.Fetch(context.Background(), nil)
	assert.ErrorContains(t, err, "an Azure Arc machine has one identity")
}

// Where to ask is what the environment says, as azidentity reads it.
func TestManagedIdentityFromEnv(t *testing.T) {
	for _, v := range []string{"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST"} {
		t.Setenv(v, "")
	}
	m := signin.ManagedIdentityFromEnv(serverApp, "")
	assert.Equal(t, signin.ManagedIdentity{Resource: serverApp}, *m, "IMDS at its own address")

	t.Setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "https://imds.example/")
	assert.Equal(t, "https://imds.example/metadata/identity/oauth2/token", signin.ManagedIdentityFromEnv(serverApp, "").IMDS)

	t.Setenv("IDENTITY_ENDPOINT", "http://localhost:40342/metadata/identity/oauth2/token")
	t.Setenv("IMDS_ENDPOINT", "http://localhost:40342")
	m = signin.ManagedIdentityFromEnv(serverApp, "")
	assert.True(t, m.Arc)
	assert.Equal(t, "http://localhost:40342/metadata/identity/oauth2/token", m.Endpoint)

	t.Setenv("IDENTITY_HEADER", "secret")
	m = signin.ManagedIdentityFromEnv(serverApp, "c")
	assert.False(t, m.Arc, "App Service's endpoint")
	assert.Equal(t, "secret", m.Header)
}
