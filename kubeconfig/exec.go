package kubeconfig

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/clusterconnect/clusterconnect/tokens"
)

// ExecCredential returns what an exec credential plugin prints for kubectl
// (client.authentication.k8s.io/v1): the source's token and, when known,
// its expiry, so kubectl runs the plugin again only when it must.
func ExecCredential(ctx context.Context, src tokens.TokenSource) ([]byte, error) {
	tok, err := src.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	status := map[string]any{"token": tok.Value}
	if !tok.Expiry.IsZero() {
		status["expirationTimestamp"] = tok.Expiry.UTC().Format(time.RFC3339)
	}
	return json.Marshal(map[string]any{
		"apiVersion": "client.authentication.k8s.io/v1",
		"kind":       "ExecCredential",
		"status":     status,
	})
}
