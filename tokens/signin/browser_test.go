package signin_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tokens/signin"
)

// browser plays the person's browser: it opens the sign-in page, where
// the stand-in signs in whom SetBrowserUser named, and follows the
// redirect to the flow's loopback listener. before, if set, runs first
// with the redirect URI the page will send the browser to.
func browser(t *testing.T, is *oidctest.Issuer, before func(redirect string)) (open func(string) error, opened <-chan string) {
	ch := make(chan string, 1)
	client := is.Client()
	return func(u string) error {
		select {
		case ch <- u:
		default: // the test reads the first
		}
		go func() {
			if before != nil {
				parsed, err := url.Parse(u)
				if err == nil {
					before(parsed.Query().Get("redirect_uri"))
				}
			}
			resp, err := client.Get(u)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		return nil
	}, ch
}

func (e *env) browserApp() {
	e.is.AddApp(oidctest.App{ClientID: cliApp, Tenant: tenant, Public: true, RedirectURIs: []string{"http://localhost"}})
}

// A person signs in in the browser; the next token comes from the
// refresh token, without the browser.
func TestBrowserSignsInThenRefreshes(t *testing.T) {
	e := start(t)
	e.browserApp()
	e.is.SetBrowserUser(&oidctest.EntraClaims{OID: "oid-alice", UPN: "alice@example.com"})
	open, opened := browser(t, e.is, nil)
	var out bytes.Buffer
	b := &signin.Browser{Config: e.config(cliApp), Open: open, Out: &out}
	tok, err := b.Fetch(context.Background(), nil)
	require.NoError(t, err)
	assert.Equal(t, "oid-alice", e.identity(t, tok))
	assert.NotEmpty(t, tok.RefreshToken)

	u, err := url.Parse(<-opened)
	require.NoError(t, err)
	q := u.Query()
	assert.Equal(t, "S256", q.Get("code_challenge_method"))
	assert.NotEmpty(t, q.Get("state"))
	assert.Regexp(t, `^http://localhost:\d+/$`, q.Get("redirect_uri"))
	assert.Contains(t, out.String(), "To sign in, open this page in a browser if none opened: "+u.String())
	logins := e.is.BrowserLogins()
	require.Len(t, logins, 1)
	assert.Equal(t, signin.ServerScope(serverApp), logins[0].Scope)

	b.Open = func(string) error { t.Error("a refresh needs no browser"); return nil }
	again, err := b.Fetch(context.Background(), tok)
	require.NoError(t, err)
	assert.Equal(t, "oid-alice", e.identity(t, again))
	assert.Equal(t, 1, e.is.TokenRequests("refresh_token"))
}

// What goes wrong says so; a local process that sends the listener a
// redirect without the state neither ends the sign-in nor slips its
// code in.
func TestBrowserFailures(t *testing.T) {
	e := start(t)
	e.browserApp()

	t.Run("the person declines", func(t *testing.T) {
		e.is.SetBrowserUser(nil)
		open, _ := browser(t, e.is, nil)
		_, err := (&signin.Browser{Config: e.config(cliApp), Open: open, Out: io.Discard}).Fetch(context.Background(), nil)
		assert.ErrorIs(t, err, signin.ErrDeclined)
		assert.ErrorContains(t, err, "access_denied: AADSTS65004")
	})

	t.Run("a forged redirect first", func(t *testing.T) {
		e.is.SetBrowserUser(&oidctest.EntraClaims{OID: "oid-alice"})
		forged := make(chan int, 3)
		open, _ := browser(t, e.is, func(redirect string) {
			for _, q := range []string{"?code=evil&state=guessed", "?error=access_denied&state=", "?code=evil"} {
				resp, err := http.Get(redirect + q)
				if err == nil {
					resp.Body.Close()
					forged <- resp.StatusCode
				}
			}
		})
		tok, err := (&signin.Browser{Config: e.config(cliApp), Open: open, Out: io.Discard}).Fetch(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, "oid-alice", e.identity(t, tok), "the person's code, not the forger's")
		assert.Equal(t, []int{400, 400, 400}, []int{<-forged, <-forged, <-forged})
	})

	t.Run("nobody signs in", func(t *testing.T) {
		_, err := (&signin.Browser{Config: e.config(cliApp), Open: func(string) error { return nil }, Out: io.Discard,
			Timeout: 50 * time.Millisecond}).Fetch(context.Background(), nil)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorContains(t, err, "nobody finished signing in within 50ms")
	})

	t.Run("an app that does not take this redirect", func(t *testing.T) {
		e.is.AddApp(oidctest.App{ClientID: "web-app", Tenant: tenant, Public: true, RedirectURIs: []string{"https://app.example.com/callback"}})
		page := make(chan string, 1)
		open := func(u string) error {
			go func() {
				resp, err := e.is.Client().Get(u)
				if err != nil {
					page <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				page <- string(b)
			}()
			return nil
		}
		_, err := (&signin.Browser{Config: e.config("web-app"), Open: open, Out: io.Discard, Timeout: time.Second}).Fetch(context.Background(), nil)
		assert.Error(t, err, "Entra shows an error page and sends nothing back")
		assert.Contains(t, <-page, "AADSTS50011")
	})
}

// The stand-in's token endpoint holds the flow to what Entra checks: the
// verifier of the challenge, the same redirect URI, a code spent once.
func TestAuthorizationCodeRedemptionIsChecked(t *testing.T) {
	e := start(t)
	e.browserApp()
	e.is.SetBrowserUser(&oidctest.EntraClaims{OID: "oid-alice"})
	cfg := e.config(cliApp)
	conf := &oauth2.Config{ClientID: cliApp, Endpoint: cfg.Endpoint(), Scopes: cfg.Scopes, RedirectURL: "http://localhost:1234/"}
	verifier := oauth2.GenerateVerifier()
	code := func() string {
		client := e.is.Client()
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := client.Get(conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
		require.NoError(t, err)
		resp.Body.Close()
		loc, err := url.Parse(resp.Header.Get("Location"))
		require.NoError(t, err)
		require.Equal(t, "st", loc.Query().Get("state"))
		return loc.Query().Get("code")
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.is.Client())

	_, err := conf.Exchange(ctx, code(), oauth2.VerifierOption(oauth2.GenerateVerifier()))
	assert.ErrorContains(t, err, "AADSTS501481", "another verifier")
	other := *conf
	other.RedirectURL = "http://localhost:9999/"
	_, err = other.Exchange(ctx, code(), oauth2.VerifierOption(verifier))
	assert.ErrorContains(t, err, "AADSTS70002", "another redirect URI")
	c := code()
	_, err = conf.Exchange(ctx, c, oauth2.VerifierOption(verifier))
	require.NoError(t, err)
	_, err = conf.Exchange(ctx, c, oauth2.VerifierOption(verifier))
	assert.ErrorContains(t, err, "AADSTS70008", "spent")

	// Without PKCE the page says so through the redirect.
	client := e.is.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(conf.AuthCodeURL("st"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.True(t, strings.Contains(resp.Header.Get("Location"), "AADSTS9002325"), resp.Header.Get("Location"))
}

// A claims challenge is met by signing in again, never by the refresh
// token; the token carries the authentication context.
func TestBrowserMeetsAClaimsChallenge(t *testing.T) {
	e := start(t)
	e.browserApp()
	e.is.SetBrowserUser(&oidctest.EntraClaims{OID: "oid-alice"})
	open, _ := browser(t, e.is, nil)
	b := &signin.Browser{Config: e.config(cliApp), Open: open, Out: io.Discard}
	plain, err := b.Fetch(context.Background(), nil)
	require.NoError(t, err)

	b.Claims = `{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`
	stepped, err := b.Fetch(context.Background(), plain)
	require.NoError(t, err)
	verified, err := e.verify.Verify(context.Background(), stepped.AccessToken)
	require.NoError(t, err)
	assert.Equal(t, []any{"c1"}, verified.Claims["acrs"])
	assert.Len(t, e.is.BrowserLogins(), 2, "signed in again")
	assert.Equal(t, b.Claims, e.is.BrowserLogins()[1].Claims)
	assert.Zero(t, e.is.TokenRequests("refresh_token"))
}
