package clientproxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/access"
)

// ListClusters asks the relay at relayURL which clusters the caller of
// src's token may reach, and whether each is connected now (the relay's
// GET /clusters, access.Authorizer.ClustersHandler). relayTLS verifies
// the relay; nil means the system roots. A refusal is an error with the
// relay's words.
func ListClusters(ctx context.Context, relayURL string, relayTLS *tls.Config, src oauth2.TokenSource) ([]access.ClusterStatus, error) {
	tok, err := src.Token()
	if err != nil {
		return nil, fmt.Errorf("clientproxy: %w", err)
	}
	status, body, err := askRelay(ctx, relayURL, "/clusters", relayTLS, tok.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("clientproxy: listing clusters: %w", err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("clientproxy: the relay did not list the clusters (%d %s): %s", status, http.StatusText(status), statusMessage(body))
	}
	var list access.ClusterList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("clientproxy: the relay's list of clusters: %w", err)
	}
	return list.Clusters, nil
}

// ClaimsChallenge asks the relay at relayURL for the claims challenge the
// caller of token last got for clusterID (the relay's GET
// /challenges/{cluster}, access.Authorizer.ChallengeHandler): "" if none.
// It is for an exec credential plugin, which kubectl runs again after a
// 401 without showing it the response.
func ClaimsChallenge(ctx context.Context, relayURL, clusterID string, relayTLS *tls.Config, token string) (string, error) {
	status, body, err := askRelay(ctx, relayURL, "/challenges/"+url.PathEscape(clusterID), relayTLS, token)
	switch {
	case err != nil:
		return "", fmt.Errorf("clientproxy: asking for a claims challenge: %w", err)
	case status == http.StatusNoContent:
		return "", nil
	case status != http.StatusOK:
		return "", fmt.Errorf("clientproxy: the relay did not say its claims challenge (%d %s): %s", status, http.StatusText(status), statusMessage(body))
	}
	var c struct{ Claims string }
	if err := json.Unmarshal(body, &c); err != nil {
		return "", fmt.Errorf("clientproxy: the relay's claims challenge: %w", err)
	}
	return c.Claims, nil
}

// maxAnswerBytes bounds what askRelay reads: a list of 100,000 clusters
// with long IDs.
const maxAnswerBytes = 16 << 20

// askRelay GETs path from the relay at relayURL with token, on a
// connection of its own, and returns the answer's status and body.
func askRelay(ctx context.Context, relayURL, path string, relayTLS *tls.Config, token string) (int, []byte, error) {
	u, err := url.Parse(relayURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return 0, nil, fmt.Errorf("relay URL %q must be https://host[:port]", relayURL)
	}
	u.Path, u.RawPath, u.RawQuery = "", "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String()+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: relayTLS, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	switch {
	case err != nil:
		return 0, nil, err
	case len(body) > maxAnswerBytes:
		return 0, nil, fmt.Errorf("the relay's answer is over %d bytes", maxAnswerBytes)
	}
	return resp.StatusCode, body, nil
}
