package signin_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tokens/signin"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

const (
	tenant      = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	otherTenant = "0b6f3c5e-1111-4a2b-9c3d-5e6f7a8b9c0d"
	serverApp   = "api://clusterconnect-server"
	cliApp      = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
	ciApp       = "5f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"
	ciObjectID  = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
)

type env struct {
	is     *oidctest.Issuer
	verify *tokens.Verifier
}

func start(t *testing.T) *env {
	t.Helper()
	is, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(is.Close)
	is.AddApp(oidctest.App{ClientID: cliApp, Tenant: tenant, Public: true})
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{
		TenantIDs: []string{tenant}, Audiences: []string{serverApp}, DiscoveryURL: is.EntraDiscoveryURL,
	})
	require.NoError(t, err)
	v, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: is.Client()})
	require.NoError(t, err)
	return &env{is: is, verify: v}
}

func (e *env) config(client string) signin.Config {
	return signin.Config{
		AuthorityHost: e.is.AuthorityHost(), TenantID: tenant, ClientID: client,
		Scopes: []string{signin.ServerScope(serverApp)}, HTTPClient: e.is.Client(),
	}
}

// identity is who the cluster's verifier says the token is for.
func (e *env) identity(t *testing.T, tok *oauth2.Token) string {
	t.Helper()
	require.NotNil(t, tok)
	verified, err := e.verify.Verify(context.Background(), tok.AccessToken)
	require.NoError(t, err, "the signed-in token must pass the cluster's verifier")
	return verified.StringClaim("oid")
}

// answerDevice plays the person at the browser: it waits for the next
// device login and approves (or denies) it.
func answerDevice(t *testing.T, is *oidctest.Issuer, approve bool, oid string) <-chan *oidctest.DeviceLogin {
	done := make(chan *oidctest.DeviceLogin, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		l, err := is.NextDeviceLogin(ctx)
		if err != nil {
			done <- nil
			return
		}
		if approve {
			is.ApproveDevice(l.UserCode, oidctest.EntraClaims{OID: oid, UPN: "alice@example.com"})
		} else {
			is.DenyDevice(l.UserCode)
		}
		done <- l
	}()
	return done
}

func deviceFlow(e *env, prompts *[]string) *signin.DeviceCode {
	return &signin.DeviceCode{Config: e.config(cliApp), Prompt: func(r *oauth2.DeviceAuthResponse) {
		var b strings.Builder
		signin.WritePrompt(&b, r)
		*prompts = append(*prompts, b.String())
	}}
}

func TestDeviceCodeSignsInThenRefreshes(t *testing.T) {
	e := start(t)
	var prompts []string
	flow := deviceFlow(e, &prompts)
	answered := answerDevice(t, e.is, true, "alice-oid")

	tok, err := flow.Fetch(context.Background(), nil)
	require.NoError(t, err)
	l := <-answered
	require.NotNil(t, l)
	assert.Equal(t, "alice-oid", e.identity(t, tok))
	require.Len(t, prompts, 1)
	assert.Contains(t, prompts[0], l.UserCode, "the person is shown the code to type")
	assert.Contains(t, prompts[0], e.is.URL+"/devicelogin")
	require.NotEmpty(t, tok.RefreshToken)

	// An expired token with a refresh token: refreshed, nobody asked.
	tok.Expiry = time.Now().Add(-time.Minute)
	again, err := flow.Fetch(context.Background(), tok)
	require.NoError(t, err)
	assert.Equal(t, "alice-oid", e.identity(t, again))
	assert.Len(t, prompts, 1, "a refresh must not ask the person again")
	assert.Equal(t, 1, e.is.TokenRequests("refresh_token"))

	// The refresh token revoked (password change): the person signs in again.
	e.is.RevokeRefreshTokens()
	answered = answerDevice(t, e.is, true, "alice-oid")
	third, err := flow.Fetch(context.Background(), again)
	require.NoError(t, err)
	require.NotNil(t, <-answered)
	assert.Equal(t, "alice-oid", e.identity(t, third))
	assert.Len(t, prompts, 2)
	assert.Equal(t, 2, e.is.TokenRequests("device_code"))
}

func TestDeviceCodeFailures(t *testing.T) {
	t.Run("declined", func(t *testing.T) {
		e := start(t)
		var prompts []string
		answered := answerDevice(t, e.is, false, "")
		_, err := deviceFlow(e, &prompts).Fetch(context.Background(), nil)
		<-answered
		require.ErrorIs(t, err, signin.ErrDeclined)
		assert.Contains(t, err.Error(), "declined")
	})
	t.Run("code expires before anyone signs in", func(t *testing.T) {
		e := start(t)
		e.is.SetSignInOptions(oidctest.SignInOptions{DeviceCodeLifetime: 2 * time.Second})
		var prompts []string
		_, err := deviceFlow(e, &prompts).Fetch(context.Background(), nil)
		require.ErrorIs(t, err, signin.ErrCodeExpired)
		assert.Contains(t, err.Error(), "run the command again")
	})
	t.Run("server asks to slow down", func(t *testing.T) {
		e := start(t)
		e.is.SetSignInOptions(oidctest.SignInOptions{SlowDown: 1})
		var prompts []string
		answered := answerDevice(t, e.is, true, "alice-oid")
		tok, err := deviceFlow(e, &prompts).Fetch(context.Background(), nil)
		require.NoError(t, err, "slow_down means poll less often, not give up")
		<-answered
		assert.Equal(t, "alice-oid", e.identity(t, tok))
	})
	t.Run("wrong tenant", func(t *testing.T) {
		e := start(t)
		flow := &signin.DeviceCode{Config: e.config(cliApp)}
		flow.TenantID = otherTenant
		_, err := flow.Fetch(context.Background(), nil)
		require.ErrorIs(t, err, signin.ErrUnknownClient)
		assert.Contains(t, err.Error(), "AADSTS700016")
		assert.Contains(t, err.Error(), "-tenant-id")
	})
	t.Run("confidential app cannot use device code", func(t *testing.T) {
		e := start(t)
		e.is.AddApp(oidctest.App{ClientID: ciApp, Tenant: tenant, Secret: "s3cret"})
		_, err := (&signin.DeviceCode{Config: e.config(ciApp)}).Fetch(context.Background(), nil)
		require.ErrorIs(t, err, signin.ErrInvalidClient)
	})
	t.Run("missing settings", func(t *testing.T) {
		_, err := (&signin.DeviceCode{}).Fetch(context.Background(), nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "tenant ID")
		assert.Contains(t, err.Error(), "client ID")
	})
}

func TestServicePrincipalSignIn(t *testing.T) {
	e := start(t)
	cert, certPEM, err := oidctest.NewClientCertificate("ci")
	require.NoError(t, err)
	e.is.AddApp(oidctest.App{ClientID: ciApp, Tenant: tenant, Secret: "s3cret", Certificate: cert, ObjectID: ciObjectID})
	certFile := filepath.Join(t.TempDir(), "ci.pem")
	require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
	loadedCert, key, err := signin.LoadCertificate(certFile)
	require.NoError(t, err)
	otherCert, otherPEM, err := oidctest.NewClientCertificate("stranger")
	require.NoError(t, err)
	otherFile := filepath.Join(t.TempDir(), "other.pem")
	require.NoError(t, os.WriteFile(otherFile, otherPEM, 0o600))
	_, otherKey, err := signin.LoadCertificate(otherFile)
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		flow source.Fetcher
		want error
	}{
		{"secret", &signin.ClientSecret{Config: e.config(ciApp), Secret: "s3cret"}, nil},
		{"wrong secret", &signin.ClientSecret{Config: e.config(ciApp), Secret: "guess"}, signin.ErrInvalidClient},
		{"certificate", &signin.ClientCertificate{Config: e.config(ciApp), Certificate: loadedCert, Key: key}, nil},
		{"certificate not on the app", &signin.ClientCertificate{Config: e.config(ciApp), Certificate: otherCert, Key: otherKey}, signin.ErrInvalidClient},
		{"right certificate, wrong key", &signin.ClientCertificate{Config: e.config(ciApp), Certificate: loadedCert, Key: otherKey}, signin.ErrInvalidClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := tc.flow.Fetch(context.Background(), nil)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
				assert.NotContains(t, err.Error(), "s3cret")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, ciObjectID, e.identity(t, tok))
			assert.Empty(t, tok.RefreshToken, "app-only sign-ins get no refresh token")
		})
	}
}

func TestWorkloadIdentityFederation(t *testing.T) {
	e := start(t)
	// The other side of the federation: a cluster's service-account issuer
	// and GitHub's, each its own issuer.
	cluster, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	github, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(github.Close)
	const saSubject = "system:serviceaccount:deploy:ci"
	const ghSubject = "repo:example/app:ref:refs/heads/main"
	e.is.AddApp(oidctest.App{ClientID: ciApp, Tenant: tenant, ObjectID: ciObjectID, Federated: []oidctest.FederatedCredential{
		{Issuer: cluster, Subject: saSubject}, {Issuer: github, Subject: ghSubject},
	}})
	saToken := func(subject, aud string) string {
		tok, err := cluster.Token(map[string]any{"iss": cluster.URL, "sub": subject, "aud": aud,
			"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
		require.NoError(t, err)
		path := filepath.Join(t.TempDir(), "token")
		require.NoError(t, os.WriteFile(path, []byte(tok+"\n"), 0o600))
		return path
	}
	ghURL, ghToken := github.GitHubActions(ghSubject)

	for _, tc := range []struct {
		name      string
		assertion func(context.Context) (string, error)
		want      error
		words     string
	}{
		{"token file", signin.TokenFile(saToken(saSubject, signin.FederatedAudience)), nil, ""},
		{"token file, subject not trusted", signin.TokenFile(saToken("system:serviceaccount:deploy:other", signin.FederatedAudience)), signin.ErrInvalidClient, "AADSTS70021"},
		{"token file, wrong audience", signin.TokenFile(saToken(saSubject, "api://somewhere-else")), signin.ErrInvalidClient, "audience"},
		{"GitHub Actions", signin.GitHubActions(ghURL, ghToken, "", github.Client()), nil, ""},
		{"GitHub Actions, bad request token", signin.GitHubActions(ghURL, "not-the-token", "", github.Client()), nil, "401"},
		{"GitHub Actions, no id-token permission", signin.GitHubActions("", "", "", nil), nil, "id-token: write"},
		{"missing token file", signin.TokenFile(filepath.Join(t.TempDir(), "absent")), nil, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flow := &signin.Federated{Config: e.config(ciApp), Assertion: tc.assertion}
			tok, err := flow.Fetch(context.Background(), nil)
			if tc.words == "" {
				require.NoError(t, err)
				assert.Equal(t, ciObjectID, e.identity(t, tok))
				return
			}
			require.Error(t, err)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
			assert.Contains(t, err.Error(), tc.words)
		})
	}
}

func TestDiskCacheSharesOneSignIn(t *testing.T) {
	e := start(t)
	e.is.AddApp(oidctest.App{ClientID: ciApp, Tenant: tenant, Secret: "s3cret", ObjectID: ciObjectID})
	flow := &signin.ClientSecret{Config: e.config(ciApp), Secret: "s3cret"}
	dir := filepath.Join(t.TempDir(), "cache")

	// Many callers at once, each with its own cache value as separate
	// processes would have: one sign-in, one token.
	var wg sync.WaitGroup
	got := make([]string, 16)
	for i := range got {
		wg.Go(func() {
			cache := &source.DiskCache{Dir: dir}
			tok, err := cache.TokenSource(flow.CacheKey(), flow).Token()
			if assert.NoError(t, err) {
				got[i] = tok.AccessToken
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 1, e.is.TokenRequests("client_credentials"))
	for _, tok := range got {
		assert.Equal(t, got[0], tok)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, ent := range entries {
		fi, err := ent.Info()
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), ent.Name())
	}
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())

	// Another scope is another key: its own sign-in.
	other := &signin.ClientSecret{Config: e.config(ciApp), Secret: "s3cret"}
	other.Scopes = []string{signin.ServerScope("api://another-server")}
	_, err = (&source.DiskCache{Dir: dir}).TokenSource(other.CacheKey(), other).Token()
	require.NoError(t, err)
	assert.Equal(t, 2, e.is.TokenRequests("client_credentials"))

	// Logout: the next use signs in again.
	n, err := (&source.DiskCache{Dir: dir}).Clear()
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	_, err = (&source.DiskCache{Dir: dir}).TokenSource(flow.CacheKey(), flow).Token()
	require.NoError(t, err)
	assert.Equal(t, 3, e.is.TokenRequests("client_credentials"))
}

func TestDiskCacheRefreshesBeforeExpiry(t *testing.T) {
	e := start(t)
	// Tokens that live 4 minutes are inside the default 5-minute margin:
	// every use replaces the cached one, with its refresh token.
	e.is.SetSignInOptions(oidctest.SignInOptions{TokenLifetime: 4 * time.Minute})
	var prompts []string
	flow := deviceFlow(e, &prompts)
	cache := &source.DiskCache{Dir: t.TempDir()}
	answered := answerDevice(t, e.is, true, "alice-oid")
	first, err := cache.TokenSource(flow.CacheKey(), flow).Token()
	require.NoError(t, err)
	<-answered
	second, err := cache.TokenSource(flow.CacheKey(), flow).Token()
	require.NoError(t, err)
	assert.NotEqual(t, first.AccessToken, second.AccessToken)
	assert.Len(t, prompts, 1, "the refresh token kept in the cache spares the person a second sign-in")
	assert.Equal(t, 1, e.is.TokenRequests("refresh_token"))

	// With a margin shorter than the lifetime, the cached token is reused.
	cache.EarlyExpiry = time.Minute
	third, err := cache.TokenSource(flow.CacheKey(), flow).Token()
	require.NoError(t, err)
	assert.Equal(t, second.AccessToken, third.AccessToken)
	assert.Equal(t, 1, e.is.TokenRequests("refresh_token"))
}

// With a PoP key, sign-ins get access tokens bound to it, and PoPSource
// signs a PoP token for every use that the cluster's verifier takes once.
func TestProofOfPossessionSignIn(t *testing.T) {
	e := start(t)
	const host = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/prod"
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenant}, Audiences: []string{serverApp}, DiscoveryURL: e.is.EntraDiscoveryURL})
	require.NoError(t, err)
	cluster, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: e.is.Client(), PoP: &tokens.PoPConfig{Hosts: []string{host}, Required: true}})
	require.NoError(t, err)
	e.is.AddApp(oidctest.App{ClientID: ciApp, Tenant: tenant, Secret: "s3cret", ObjectID: ciObjectID})
	keyFile := filepath.Join(t.TempDir(), "pop.key")
	key, err := signin.LoadOrCreatePoPKey(keyFile)
	require.NoError(t, err)
	fi, err := os.Stat(keyFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	again, err := signin.LoadOrCreatePoPKey(keyFile)
	require.NoError(t, err)
	assert.Equal(t, key.Thumbprint(), again.Thumbprint(), "the key is kept: cached tokens stay bound to it")

	popConfig := func(client string) signin.Config {
		c := e.config(client)
		c.PoPKey = key
		return c
	}
	for _, tc := range []struct {
		name string
		flow source.Fetcher
		oid  string
	}{
		{"client secret", &signin.ClientSecret{Config: popConfig(ciApp), Secret: "s3cret"}, ciObjectID},
		{"device code", &signin.DeviceCode{Config: popConfig(cliApp), Prompt: func(*oauth2.DeviceAuthResponse) {}}, "alice-oid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flow := tc.flow
			if _, ok := flow.(*signin.DeviceCode); ok {
				answerDevice(t, e.is, true, "alice-oid")
			}
			src := signin.PoPSource(source.FromFetcher(flow), key, host)
			first, err := src.Token()
			require.NoError(t, err)
			second, err := src.Token()
			require.NoError(t, err)
			assert.NotEqual(t, first.AccessToken, second.AccessToken, "a PoP token per use")
			for _, tok := range []string{first.AccessToken, second.AccessToken} {
				verified, err := cluster.Verify(context.Background(), tok)
				require.NoError(t, err)
				assert.Equal(t, tc.oid, verified.StringClaim("oid"))
			}
			_, err = cluster.Verify(context.Background(), first.AccessToken)
			require.ErrorIs(t, err, tokens.ErrPoPReplayed)

			// The access token alone is refused: only PoP tokens are taken,
			// and this one is bound to the key.
			if _, ok := flow.(*signin.ClientSecret); ok {
				at, err := flow.Fetch(context.Background(), nil)
				require.NoError(t, err)
				_, err = cluster.Verify(context.Background(), at.AccessToken)
				require.ErrorIs(t, err, tokens.ErrPoPRequired)
			}
		})
	}
}
