package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

const (
	tenant    = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	serverApp = "api://clusterconnect-server"
	ciApp     = "5f1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"
	cliApp    = "04b07795-8ddb-461a-bbee-02f9e1bf7b46" // the default for devicecode
)

// signInEnv is the Entra stand-in, and what a proxy process needs to
// reach it: its CA in SSL_CERT_FILE, a token cache of its own, and no
// Azure variables from the machine running the tests.
type signInEnv struct {
	is    *oidctest.Issuer
	cache string
	env   []string
}

func startSignIn(t *testing.T) *signInEnv {
	t.Helper()
	is, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(is.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(ca, is.CA.CertPEM(), 0o600))
	return &signInEnv{is: is, cache: filepath.Join(dir, "cache"), env: append(cleanEnv(), "SSL_CERT_FILE="+ca)}
}

// cleanEnv is the environment without the machine's own Azure, GitHub
// Actions and proxy settings.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AZURE_") && !strings.HasPrefix(kv, "ACTIONS_ID_TOKEN_") && !strings.HasPrefix(kv, "CLUSTERCONNECT_") {
			env = append(env, kv)
		}
	}
	return env
}

func (e *signInEnv) args(extra ...string) []string {
	return append([]string{"token", "-server-id", serverApp, "-tenant-id", tenant,
		"-authority-host", e.is.AuthorityHost(), "-token-cache-dir", e.cache}, extra...)
}

// token runs `proxy token` as kubectl would and returns the token of the
// ExecCredential it printed, and its stderr.
func (e *signInEnv) token(t *testing.T, env []string, args ...string) (string, string, error) {
	cmd := exec.Command(proxyBin, args...)
	cmd.Env = append(slices.Clip(e.env), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return "", stderr.String(), err
	}
	var cred clientauthv1.ExecCredential
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &cred), stdout.String())
	require.NotNil(t, cred.Status)
	require.NotNil(t, cred.Status.ExpirationTimestamp, "kubectl must be told when to ask again")
	return cred.Status.Token, stderr.String(), nil
}

// kubectl runs the exec plugin once per call; concurrent calls (a script,
// parallel CI steps) share one sign-in through the cache on disk.
func TestPluginSignsInOnceForManyProcesses(t *testing.T) {
	e := startSignIn(t)
	e.is.AddApp(oidctest.App{ClientID: ciApp, Tenant: tenant, Secret: "s3cret-value", ObjectID: "ci-oid"})
	secret := []string{"AZURE_CLIENT_SECRET=s3cret-value"}
	args := e.args("-login", "spn", "-client-id", ciApp)

	var wg sync.WaitGroup
	tokens := make([]string, 8)
	for i := range tokens {
		wg.Go(func() {
			tok, stderr, err := e.token(t, secret, args...)
			if assert.NoError(t, err, stderr) {
				tokens[i] = tok
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 1, e.is.TokenRequests("client_credentials"), "one sign-in for eight processes")
	for _, tok := range tokens {
		assert.Equal(t, tokens[0], tok)
	}
	files, err := filepath.Glob(filepath.Join(e.cache, "*.json"))
	require.NoError(t, err)
	require.Len(t, files, 1)
	fi, err := os.Stat(files[0])
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	data, err := os.ReadFile(files[0])
	require.NoError(t, err)
	assert.NotContains(t, string(data), "s3cret-value", "the secret is not cached")

	out, err := exec.Command(proxyBin, "logout", "-token-cache-dir", e.cache).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "removed 1 cached token")
	_, stderr, err := e.token(t, secret, args...)
	require.NoError(t, err, stderr)
	assert.Equal(t, 2, e.is.TokenRequests("client_credentials"), "after logout the plugin signs in again")

	// A wrong secret: kubectl shows the plugin's stderr, which says what
	// Entra said and what to check, and never the secret.
	require.NoError(t, exec.Command(proxyBin, "logout", "-token-cache-dir", e.cache).Run())
	_, stderr, err = e.token(t, []string{"AZURE_CLIENT_SECRET=wrong-guess"}, args...)
	require.Error(t, err)
	assert.Contains(t, stderr, "AADSTS7000215")
	assert.Contains(t, stderr, "check the client secret")
	assert.NotContains(t, stderr, "wrong-guess")
}

// A person signs in once with a device code; the next kubectl call, a
// new process, asks nobody.
func TestPluginDeviceCodeSignIn(t *testing.T) {
	e := startSignIn(t)
	e.is.AddApp(oidctest.App{ClientID: cliApp, Tenant: tenant, Public: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// -authority-ca instead of SSL_CERT_FILE, as the trial does.
	ca := filepath.Join(t.TempDir(), "entra-ca.pem")
	require.NoError(t, os.WriteFile(ca, e.is.CA.CertPEM(), 0o600))
	cmd := exec.CommandContext(ctx, proxyBin, e.args("-login", "devicecode", "-authority-ca", ca)...)
	cmd.Env = cleanEnv()
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	prompt := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "enter the code") {
				prompt <- sc.Text()
			}
		}
	}()
	login, err := e.is.NextDeviceLogin(ctx)
	require.NoError(t, err)
	select {
	case line := <-prompt:
		assert.Contains(t, line, login.UserCode, "the person sees the code on the terminal")
	case <-ctx.Done():
		t.Fatal("no sign-in prompt on stderr")
	}
	require.NoError(t, e.is.ApproveDevice(login.UserCode, oidctest.EntraClaims{OID: "alice-oid"}))
	require.NoError(t, cmd.Wait(), stdout.String())
	assert.Contains(t, stdout.String(), `"token"`)

	_, errOut, err := e.token(t, nil, e.args("-login", "devicecode")...)
	require.NoError(t, err, errOut)
	assert.NotContains(t, errOut, "enter the code", "the cached token spares a second sign-in")
	assert.Equal(t, 1, e.is.TokenRequests("device_code"))
}

// In GitHub Actions the plugin signs in with the job's OIDC token: no
// secret, no az.
func TestPluginWorkloadIdentity(t *testing.T) {
	e := startSignIn(t)
	github, err := oidctest.Start()
	require.NoError(t, err)
	t.Cleanup(github.Close)
	const subject = "repo:example/app:environment:production"
	e.is.AddApp(oidctest.App{ClientID: ciApp, Tenant: tenant, ObjectID: "ci-oid",
		Federated: []oidctest.FederatedCredential{{Issuer: github, Subject: subject}}})
	// The job's OIDC endpoint is another issuer with its own CA.
	cas := filepath.Join(t.TempDir(), "cas.pem")
	require.NoError(t, os.WriteFile(cas, append(e.is.CA.CertPEM(), github.CA.CertPEM()...), 0o600))
	url, requestToken := github.GitHubActions(subject)
	env := []string{"SSL_CERT_FILE=" + cas, "ACTIONS_ID_TOKEN_REQUEST_URL=" + url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + requestToken,
		"AZURE_CLIENT_ID=" + ciApp}

	tok, stderr, err := e.token(t, env, e.args("-login", "workloadidentity")...)
	require.NoError(t, err, stderr)
	assert.NotEmpty(t, tok)
	_, stderr, err = e.token(t, env, e.args("-login", "workloadidentity")...)
	require.NoError(t, err, stderr)
	assert.Equal(t, 1, e.is.TokenRequests("client_credentials"), "the next step reuses the cached token")

	// Without "permissions: id-token: write" there is no endpoint; the
	// error says which permission is missing.
	_, stderr, err = e.token(t, []string{"AZURE_CLIENT_ID=" + ciApp}, e.args("-login", "workloadidentity", "-no-token-cache")...)
	require.Error(t, err)
	assert.Contains(t, stderr, "id-token: write")
}

// Direct mode writes the sign-in flags into the kubeconfig, with files by
// absolute path and without the secret.
func TestDirectKubeconfigWithSignIn(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "config")
	cmd := exec.Command(proxyBin, "kubeconfig", "-relay-url", "https://relay.example.com", "-cluster-id", "prod",
		"-kubeconfig", kc, "-login", "spn", "-server-id", serverApp, "-tenant-id", tenant, "-client-id", ciApp,
		"-client-secret", "s3cret-value", "-token-cache-dir", "cache")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "AZURE_CLIENT_SECRET")
	raw, err := os.ReadFile(kc)
	require.NoError(t, err)
	assert.NotContains(t, string(raw), "s3cret-value")
	cfg, err := clientcmd.LoadFromFile(kc)
	require.NoError(t, err)
	for _, ai := range cfg.AuthInfos {
		require.NotNil(t, ai.Exec)
		args := strings.Join(ai.Exec.Args, " ")
		assert.Contains(t, args, "-login spn")
		assert.Contains(t, args, "-server-id "+serverApp)
		assert.Contains(t, args, "-token-cache-dir "+filepath.Join(dir, "cache"))
	}

	// Flags that cannot work are refused before anything is written.
	for _, tc := range []struct {
		args  []string
		words string
	}{
		{[]string{"-login", "spn", "-tenant-id", tenant, "-client-id", ciApp}, "-server-id"},
		{[]string{"-login", "spn", "-server-id", serverApp, "-tenant-id", tenant, "-client-id", ciApp}, "-client-secret"},
		{[]string{"-login", "devicecode", "-server-id", serverApp}, "-tenant-id"},
		{[]string{"-login", "magic", "-server-id", serverApp}, "interactive, devicecode, spn, workloadidentity, msi, azurecli"},
		{[]string{"-login", "devicecode", "-server-id", serverApp, "-tenant-id", tenant, "-cloud", "mars"}, "public, usgov or china"},
		{[]string{"-login", "azurecli", "-server-id", serverApp, "-token-file", "x"}, "exactly one"},
	} {
		cmd := exec.Command(proxyBin, append([]string{"kubeconfig", "-relay-url", "https://relay.example.com", "-cluster-id", "prod",
			"-kubeconfig", filepath.Join(dir, "refused")}, tc.args...)...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, string(out), tc.words, "%v", tc.args)
		assert.NoFileExists(t, filepath.Join(dir, "refused"))
	}
}

// The CI example's workflow runs flags that exist: each
// clusterconnect-proxy command line in it parses (up to the point where it
// would need the network).
func TestCIExampleFlagsExist(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "ci", "deploy.yml"))
	require.NoError(t, err)
	// Join continued lines, then take each clusterconnect-proxy command.
	text := strings.ReplaceAll(string(raw), "\\\n", " ")
	text = regexp.MustCompile(`\$\{\{[^}]*\}\}`).ReplaceAllString(text, "value") // the workflow's expressions
	var found int
	for _, line := range strings.Split(text, "\n") {
		_, cmdline, ok := strings.Cut(line, "clusterconnect-proxy ")
		if !ok || strings.HasPrefix(strings.TrimSpace(line), "#") || strings.Contains(line, `"$RUNNER_TEMP/bin/clusterconnect-proxy"`) {
			continue
		}
		cmdline, _, _ = strings.Cut(cmdline, " #")
		var args []string
		for _, f := range strings.Fields(cmdline) {
			args = append(args, strings.Trim(f, `"`))
		}
		found++
		// -h after the subcommand's flags: the flags must all parse first.
		out, err := exec.Command(proxyBin, append(args, "-h")...).CombinedOutput()
		require.NoError(t, err, "clusterconnect-proxy %s\n%s", strings.Join(args, " "), out)
		assert.NotContains(t, string(out), "flag provided but not defined")
	}
	assert.Equal(t, 2, found, "kubeconfig and logout")
}

// With -pop-host the plugin prints a PoP token per run, bound to a key kept
// in the token cache, and signs in once.
func TestPluginProofOfPossession(t *testing.T) {
	e := startSignIn(t)
	e.is.AddApp(oidctest.App{ClientID: ciApp, Tenant: tenant, Secret: "s3cret-value", ObjectID: "ci-oid"})
	const host = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Kubernetes/connectedClusters/prod"
	issuers, err := tokens.EntraIssuers(tokens.EntraConfig{TenantIDs: []string{tenant}, Audiences: []string{serverApp}, DiscoveryURL: e.is.EntraDiscoveryURL})
	require.NoError(t, err)
	cluster, err := tokens.NewVerifier(&tokens.Config{Issuers: issuers, HTTPClient: e.is.Client(), PoP: &tokens.PoPConfig{Hosts: []string{host}, Required: true}})
	require.NoError(t, err)
	args := e.args("-login", "spn", "-client-id", ciApp, "-pop-host", host)
	var seen []string
	for range 2 {
		tok, stderr, err := e.token(t, []string{"AZURE_CLIENT_SECRET=s3cret-value"}, args...)
		require.NoError(t, err, stderr)
		verified, err := cluster.Verify(context.Background(), tok)
		require.NoError(t, err)
		assert.Equal(t, "ci-oid", verified.StringClaim("oid"))
		seen = append(seen, tok)
	}
	assert.NotEqual(t, seen[0], seen[1], "a PoP token per run")
	assert.Equal(t, 1, e.is.TokenRequests("client_credentials"), "one sign-in: the bound access token is cached")
	keys, err := filepath.Glob(filepath.Join(e.cache, "pop-*.key"))
	require.NoError(t, err)
	require.Len(t, keys, 1, "a key for the cache entry")
	fi, err := os.Stat(keys[0])
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Another server app is another cache entry, with a key of its own.
	other := e.args("-login", "spn", "-client-id", ciApp, "-pop-host", host)
	for i, a := range other {
		if a == serverApp {
			other[i] = "api://another-server"
		}
	}
	_, stderr, err := e.token(t, []string{"AZURE_CLIENT_SECRET=s3cret-value"}, other...)
	require.NoError(t, err, stderr)
	keys, err = filepath.Glob(filepath.Join(e.cache, "pop-*.key"))
	require.NoError(t, err)
	assert.Len(t, keys, 2)
}

// A token the relay would refuse is stopped by the plugin, which says why
// and what to do — once per kubectl command: kubectl runs the plugin again
// for each try, and shows each run's stderr.
func TestTokenSaysWhatIsWrongOncePerCommand(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	expired := enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"exp":1700000000,"tid":"`+tenant+`"}`)) + ".c2ln"
	cache := t.TempDir()
	run := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(proxyBin, args...)
		cmd.Env = append(cleanEnv(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		require.True(t, err == nil || errors.As(err, &exit), "%v", err)
		return stderr.String(), cmd.ProcessState.ExitCode()
	}
	const said = "proxy: login: the token would be refused: the token given with -token expired at 2023-11-14T22:13:20Z: give a new one\n"
	byKubectl := []string{`KUBERNETES_EXEC_INFO={"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}`}
	args := []string{"token", "-token", expired, "-token-cache-dir", cache}

	stderr, code := run(byKubectl, args...)
	assert.Equal(t, said, stderr)
	assert.Equal(t, 1, code)
	for range 5 {
		stderr, code = run(byKubectl, args...)
		assert.Empty(t, stderr, "the same kubectl command was told already")
		assert.Equal(t, 1, code, "and the token is still refused")
	}

	// Another command (another parent process) is told again.
	sh := exec.Command("sh", append([]string{"-c", `"$0" "$@" 2>&1`, proxyBin}, args...)...)
	sh.Env = append(cleanEnv(), byKubectl...)
	out, err := sh.Output()
	assert.Error(t, err)
	assert.Equal(t, said, string(out))

	// Run by hand, not by kubectl: every run says it.
	for range 2 {
		stderr, _ = run(nil, args...)
		assert.Equal(t, said, stderr)
	}
	// Another tenant than the cluster's, with a token that has not expired.
	other := enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"exp":4102444800,"tid":"11111111-2222-4333-8444-555555555555"}`)) + ".c2ln"
	stderr, _ = run(nil, "token", "-token", other, "-tenant-id", tenant, "-token-cache-dir", cache)
	assert.Contains(t, stderr, "is of tenant 11111111-2222-4333-8444-555555555555, and this cluster's sign-in is for tenant "+tenant)
}

// With no -login but a -server-id, a person at a desktop signs in in the
// browser: the plugin opens it (here a stand-in xdg-open that does
// nothing) and prints the page, which the person's browser (an HTTP
// client) follows back to the plugin's loopback listener. Without a
// display, the same flags sign in with a device code.
func TestPluginSignsAPersonInInTheBrowser(t *testing.T) {
	e := startSignIn(t)
	e.is.AddApp(oidctest.App{ClientID: cliApp, Tenant: tenant, Public: true, RedirectURIs: []string{"http://localhost"}})
	e.is.SetBrowserUser(&oidctest.EntraClaims{OID: "alice-oid", UPN: "alice@contoso.com"})
	bin := t.TempDir()
	opened := filepath.Join(t.TempDir(), "opened")
	require.NoError(t, os.WriteFile(filepath.Join(bin, "xdg-open"), []byte("#!/bin/sh\necho \"$1\" > "+opened+"\n"), 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	run := func(env []string, person func(line string)) (string, error) {
		cmd := exec.CommandContext(ctx, proxyBin, e.args()...)
		cmd.Env = append(slices.Clip(e.env), env...)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderr, err := cmd.StderrPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			person(sc.Text())
		}
		err = cmd.Wait() // before stdout is read: Wait finishes copying it
		return stdout.String(), err
	}
	out, err := run([]string{"DISPLAY=:0", "PATH=" + bin + ":" + os.Getenv("PATH")}, func(line string) {
		page, ok := strings.CutPrefix(line, "To sign in, open this page in a browser if none opened: ")
		if !ok {
			return
		}
		resp, err := e.is.Client().Get(page)
		if assert.NoError(t, err) {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Contains(t, string(body), "Signed in. You can close this window")
		}
	})
	require.NoError(t, err)
	assert.Contains(t, out, `"token"`)
	b, err := os.ReadFile(opened)
	require.NoError(t, err, "the browser was opened")
	assert.Contains(t, string(b), e.is.URL+"/"+tenant+"/oauth2/v2.0/authorize?")
	assert.Len(t, e.is.BrowserLogins(), 1)

	// Headless: the same flags show a device code.
	e.cache = filepath.Join(t.TempDir(), "cache")
	go func() {
		if l, err := e.is.NextDeviceLogin(ctx); err == nil {
			e.is.ApproveDevice(l.UserCode, oidctest.EntraClaims{OID: "alice-oid"})
		}
	}()
	var prompted bool
	out, err = run([]string{"DISPLAY=", "WAYLAND_DISPLAY="}, func(line string) { prompted = prompted || strings.Contains(line, "enter the code") })
	require.NoError(t, err)
	assert.Contains(t, out, `"token"`)
	assert.True(t, prompted)
	assert.Len(t, e.is.BrowserLogins(), 1, "no browser without a display")
}

// On an Azure machine (a self-hosted CI runner on a VM), -login msi gets
// the machine's managed identity's token, or a user-assigned one's with
// -client-id: no secret anywhere.
func TestPluginManagedIdentity(t *testing.T) {
	e := startSignIn(t)
	e.is.AddManagedIdentity(oidctest.ManagedIdentity{ClientID: "vm-client", ObjectID: "vm-oid", Tenant: tenant, SystemAssigned: true})
	e.is.AddManagedIdentity(oidctest.ManagedIdentity{ClientID: "ua-client", ObjectID: "ua-oid", Tenant: tenant})
	imds := []string{"AZURE_POD_IDENTITY_AUTHORITY_HOST=" + e.is.URL}
	args := []string{"token", "-login", "msi", "-server-id", serverApp, "-token-cache-dir", e.cache}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		oid  string
	}{
		{"IMDS, system-assigned", imds, nil, "vm-oid"},
		{"IMDS, user-assigned", imds, []string{"-client-id", "ua-client"}, "ua-oid"},
		{"App Service", []string{"IDENTITY_ENDPOINT=" + e.is.IdentityEndpoint(), "IDENTITY_HEADER=" + oidctest.IdentityHeader}, []string{"-client-id", "ua-client"}, "ua-oid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, stderr, err := e.token(t, tc.env, append(slices.Clip(args), tc.args...)...)
			require.NoError(t, err, stderr)
			c, ok := source.ReadUnverified(tok)
			require.True(t, ok)
			assert.Equal(t, tenant, c.TenantID)
			var claims struct{ Oid, Aud string }
			parts := strings.Split(tok, ".")
			b, err := base64.RawURLEncoding.DecodeString(parts[1])
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(b, &claims))
			assert.Equal(t, tc.oid, claims.Oid)
			assert.Equal(t, serverApp, claims.Aud)
		})
	}
	requests := e.is.IdentityRequests()
	_, stderr, err := e.token(t, imds, args...)
	require.NoError(t, err, stderr)
	assert.Equal(t, requests, e.is.IdentityRequests(), "cached on disk: kubectl's next calls do not ask IMDS")
}
