package signin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"golang.org/x/oauth2"
)

// FederatedAudience is the audience Entra ID wants in a federated token
// (what a federated credential on the app names by default).
const FederatedAudience = "api://AzureADTokenExchange"

// Federated signs an app in with workload identity federation: a token
// from another issuer that the app trusts (a Kubernetes service account's
// projected token, a GitHub Actions job's OIDC token) is sent as the
// client assertion. No secret is stored anywhere.
type Federated struct {
	Config
	// Assertion returns a fresh federated token; it is called on every
	// sign-in, as such tokens live minutes.
	Assertion func(ctx context.Context) (string, error)
}

// Fetch signs in.
func (f *Federated) Fetch(ctx context.Context, _ *oauth2.Token) (*oauth2.Token, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	if f.Assertion == nil {
		return nil, errors.New("signin: workload identity sign-in needs a federated token")
	}
	assertion, err := f.Assertion(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := f.tokenRequest(ctx, "", url.Values{"client_assertion_type": {jwtBearer}, "client_assertion": {assertion}})
	if err != nil {
		return nil, wrap("workload identity sign-in", err)
	}
	return tok, nil
}

// TokenFile reads the federated token from a file, again on every call:
// AZURE_FEDERATED_TOKEN_FILE, which Azure Workload Identity's webhook
// points at a service-account token the kubelet renews.
func TokenFile(path string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("signin: federated token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("signin: federated token file %s is empty", path)
		}
		return tok, nil
	}
}

// GitHubActions asks a GitHub Actions job's OIDC token endpoint for a token
// with the given audience (FederatedAudience when empty). requestURL and
// requestToken are the job's ACTIONS_ID_TOKEN_REQUEST_URL and
// ACTIONS_ID_TOKEN_REQUEST_TOKEN, there when the workflow has
// "permissions: id-token: write". client nil means a client with
// DefaultTimeout.
func GitHubActions(requestURL, requestToken, audience string, client *http.Client) func(context.Context) (string, error) {
	if audience == "" {
		audience = FederatedAudience
	}
	if client == nil {
		client = &http.Client{Timeout: DefaultTimeout}
	}
	return func(ctx context.Context) (string, error) {
		if requestURL == "" || requestToken == "" {
			return "", errors.New("signin: no GitHub Actions OIDC endpoint: the workflow needs \"permissions: id-token: write\"")
		}
		u, err := url.Parse(requestURL)
		if err != nil {
			return "", fmt.Errorf("signin: ACTIONS_ID_TOKEN_REQUEST_URL: %w", err)
		}
		q := u.Query()
		q.Set("audience", audience)
		u.RawQuery = q.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return "", fmt.Errorf("signin: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+requestToken)
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return "", fmt.Errorf("signin: GitHub Actions OIDC token: %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return "", fmt.Errorf("signin: GitHub Actions OIDC token: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("signin: GitHub Actions OIDC token: %s: %s", resp.Status, firstLine(string(body)))
		}
		var doc struct {
			Value string `json:"value"`
		}
		if err := json.Unmarshal(body, &doc); err != nil || doc.Value == "" {
			return "", errors.New("signin: GitHub Actions OIDC token: the answer holds no token")
		}
		return doc.Value, nil
	}
}
