package signin

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

const stepManaged = "managed identity"

// DefaultIMDS is the token URL of Azure's instance metadata service.
const DefaultIMDS = "http://169.254.169.254/metadata/identity/oauth2/token"

// ManagedIdentity gets tokens of the Azure managed identity of the
// machine it runs on — a VM or scale set (a self-hosted CI runner on
// Azure), App Service, Functions, Container Apps, an Azure Arc-enabled
// server — as kubelogin's msi mode and azidentity's
// ManagedIdentityCredential do, with no credential of its own: from the
// App Service or Arc identity endpoint when Endpoint is set, else from
// the instance metadata service (IMDS).
type ManagedIdentity struct {
	// Resource is what the token is for: the server app's application ID
	// URI or client ID (a scope's "/.default" is dropped). Required.
	Resource string
	// ClientID picks a user-assigned identity by its client ID; empty:
	// the system-assigned one, or the only one assigned.
	ClientID string
	// Endpoint and Header are App Service's identity endpoint and its
	// secret (IDENTITY_ENDPOINT, IDENTITY_HEADER: see
	// ManagedIdentityFromEnv); empty Endpoint: IMDS.
	Endpoint, Header string
	// Arc says Endpoint is an Azure Arc agent's (IDENTITY_ENDPOINT with
	// IMDS_ENDPOINT): it answers a first request with a challenge naming
	// a key file only the machine's administrators and this user's group
	// may read, whose content the second request presents. The file must
	// be a .key file of at most 4 KiB in ArcKeyDir (default DefaultArcKeyDir),
	// so that whatever answers on Endpoint cannot make this read another
	// file.
	Arc       bool
	ArcKeyDir string
	// IMDS is the metadata service's token URL; default DefaultIMDS.
	IMDS string
	// HTTPClient makes the requests; nil is a client with
	// DefaultTimeout that goes to IMDS directly, never through a proxy.
	HTTPClient *http.Client

	backoff time.Duration // the first retry's wait; tests shorten it
}

// DefaultArcKeyDir is where the Azure Arc agent puts the key files its
// challenges name, on Linux (on Windows, under %ProgramData%).
const DefaultArcKeyDir = "/var/opt/azcmagent/tokens"

// ManagedIdentityFromEnv is a ManagedIdentity for resource and clientID
// that asks where the environment says: App Service's IDENTITY_ENDPOINT
// and IDENTITY_HEADER when both are set; the Arc agent's
// IDENTITY_ENDPOINT when IMDS_ENDPOINT is set beside it; else IMDS, at
// AZURE_POD_IDENTITY_AUTHORITY_HOST when that is set (as azidentity reads
// them).
func ManagedIdentityFromEnv(resource, clientID string) *ManagedIdentity {
	m := &ManagedIdentity{Resource: resource, ClientID: clientID}
	e, h := os.Getenv("IDENTITY_ENDPOINT"), os.Getenv("IDENTITY_HEADER")
	if e != "" && h != "" {
		m.Endpoint, m.Header = e, h
	} else if e != "" && os.Getenv("IMDS_ENDPOINT") != "" {
		m.Endpoint, m.Arc = e, true
	} else if host := os.Getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST"); host != "" {
		m.IMDS = strings.TrimSuffix(host, "/") + "/metadata/identity/oauth2/token"
	}
	return m
}

// CacheKey identifies the identity's tokens for resource in a token cache.
func (m *ManagedIdentity) CacheKey() string {
	return strings.Join([]string{"msi", cmp.Or(m.Endpoint, m.IMDS, DefaultIMDS), m.ClientID, m.resource()}, "|")
}

func (m *ManagedIdentity) resource() string { return strings.TrimSuffix(m.Resource, "/.default") }

// Fetch asks for a token, retrying what the services answer while they
// start or are busy (404, 410, 429, 5xx) up to four times with growing
// waits, as Azure asks of IMDS clients.
func (m *ManagedIdentity) Fetch(ctx context.Context, _ *oauth2.Token) (*oauth2.Token, error) {
	if m.resource() == "" {
		return nil, errors.New("signin: a managed identity needs a resource (the server app's ID)")
	}
	if m.Arc && m.ClientID != "" {
		return nil, errors.New("signin: an Azure Arc machine has one identity, its own: no -client-id")
	}
	wait := m.backoff
	if wait <= 0 {
		wait = time.Second
	}
	for attempt := 0; ; attempt++ {
		tok, retry, err := m.ask(ctx)
		if !retry || attempt == 4 {
			return tok, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, fmt.Errorf("signin: %s: %w (after %v)", stepManaged, ctx.Err(), err)
		}
		wait *= 2
	}
}

// ask asks once; retry says whether the answer is worth asking again.
func (m *ManagedIdentity) ask(ctx context.Context) (tok *oauth2.Token, retry bool, err error) {
	q := url.Values{"resource": {m.resource()}}
	var endpoint string
	h := http.Header{}
	switch {
	case m.Arc:
		endpoint = m.Endpoint
		q.Set("api-version", "2019-11-01")
		h.Set("Metadata", "true")
	case m.Endpoint != "":
		endpoint = m.Endpoint
		q.Set("api-version", "2019-08-01")
		h.Set("X-IDENTITY-HEADER", m.Header)
	default:
		endpoint = cmp.Or(m.IMDS, DefaultIMDS)
		q.Set("api-version", "2018-02-01")
		h.Set("Metadata", "true")
	}
	if m.ClientID != "" {
		q.Set("client_id", m.ClientID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"?"+q.Encode(), nil)
	if err != nil {
		return nil, false, fmt.Errorf("signin: %s: %w", stepManaged, err)
	}
	req.Header = h
	client := m.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: DefaultTimeout, Transport: &http.Transport{Proxy: nil}}
	}
	resp, err := client.Do(req)
	if err == nil && m.Arc && resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		var key string
		if key, err = m.arcKey(resp.Header.Get("Www-Authenticate")); err != nil {
			return nil, false, err
		}
		req = req.Clone(ctx)
		req.Header.Set("Authorization", "Basic "+key)
		resp, err = client.Do(req)
	}
	if err != nil {
		return nil, false, fmt.Errorf("signin: %s: %w (is this an Azure machine with a managed identity?)", stepManaged, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		json.Unmarshal(body, &e)
		s := resp.StatusCode
		return nil, s == 404 || s == 410 || s == 429 || s >= 500,
			&Error{Step: stepManaged, Code: cmp.Or(e.Error, "HTTP "+strconv.Itoa(s)), Description: cmp.Or(e.Description, strings.TrimSpace(string(body)))}
	}
	var r struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresOn   any    `json:"expires_on"`
		ExpiresIn   any    `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.AccessToken == "" {
		return nil, false, fmt.Errorf("signin: %s: the answer holds no token", stepManaged)
	}
	tok = &oauth2.Token{AccessToken: r.AccessToken, TokenType: cmp.Or(r.TokenType, "Bearer")}
	if on := seconds(r.ExpiresOn); on > 0 {
		tok.Expiry = time.Unix(on, 0)
	} else if in := seconds(r.ExpiresIn); in > 0 {
		tok.Expiry = time.Now().Add(time.Duration(in) * time.Second)
	}
	return tok, false, nil
}

// arcKey reads the key file an Arc agent's challenge (Basic
// realm=<path>) names, if it is one the agent would have written.
func (m *ManagedIdentity) arcKey(challenge string) (string, error) {
	path, ok := strings.CutPrefix(challenge, "Basic realm=")
	if !ok {
		return "", fmt.Errorf("signin: %s: the Arc agent's challenge names no key file", stepManaged)
	}
	dir := cmp.Or(m.ArcKeyDir, DefaultArcKeyDir)
	if runtime.GOOS == "windows" && m.ArcKeyDir == "" {
		dir = filepath.Join(os.Getenv("ProgramData"), "AzureConnectedMachineAgent", "Tokens")
	}
	path = filepath.Clean(strings.Trim(path, `"`))
	if filepath.Dir(path) != filepath.Clean(dir) || filepath.Ext(path) != ".key" {
		return "", fmt.Errorf("signin: %s: the Arc agent's challenge names %s, not a .key file in %s", stepManaged, path, dir)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return "", fmt.Errorf("signin: %s: %w", stepManaged, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > 4096 { // not a link to another file
		return "", fmt.Errorf("signin: %s: %s is not a key file of at most 4 KiB", stepManaged, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("signin: %s: %w (reading it takes membership of the himds group, or administrator rights)", stepManaged, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// seconds reads a number the services send as a string or a number.
func seconds(v any) int64 {
	switch x := v.(type) {
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	case float64:
		return int64(x)
	}
	return 0
}
