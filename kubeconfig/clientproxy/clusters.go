package clientproxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
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
	u, err := url.Parse(relayURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("clientproxy: relay URL %q must be https://host[:port]", relayURL)
	}
	tok, err := src.Token()
	if err != nil {
		return nil, fmt.Errorf("clientproxy: %w", err)
	}
	u.Path = "/clusters"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: relayTLS, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("clientproxy: listing clusters: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("clientproxy: listing clusters: %w", err)
	case len(body) > maxListBytes:
		return nil, fmt.Errorf("clientproxy: the relay's list of clusters is over %d bytes", maxListBytes)
	case resp.StatusCode != http.StatusOK:
		var st struct{ Message string }
		if json.Unmarshal(body, &st) != nil || st.Message == "" {
			st.Message = strings.TrimSpace(string(body))
		}
		return nil, fmt.Errorf("clientproxy: the relay did not list the clusters (%s): %s", resp.Status, st.Message)
	}
	var list access.ClusterList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("clientproxy: the relay's list of clusters: %w", err)
	}
	return list.Clusters, nil
}

// maxListBytes bounds what ListClusters reads: a list of 100,000 clusters
// with long IDs.
const maxListBytes = 16 << 20
