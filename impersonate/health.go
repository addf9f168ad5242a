package impersonate

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Healthz answers 200 while the process serves: a liveness probe.
func (h *Handler) Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
}

// Readyz answers 200 when the API server is ready and every token issuer's
// keys are known, 503 saying which is not otherwise. Serve it on the agent's
// own port, not through the tunnel, where /readyz is the API server's.
func (h *Handler) Readyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := h.healthCheck(ctx); err != nil {
			http.Error(w, "API server: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if ready, ok := h.verifier.(interface{ Ready(context.Context) error }); ok {
			if err := ready.Ready(ctx); err != nil {
				http.Error(w, "token keys: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		io.WriteString(w, "ok\n")
	})
}

func apiServerReady(ctx context.Context, rt http.RoundTripper, target *url.URL) error {
	u := *target
	u.Path = "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return nil
}
