package tokens_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/promtest"
	"github.com/clusterconnect/clusterconnect/tokens"
	"github.com/clusterconnect/clusterconnect/tokens/oidctest"
)

// An operator reads why tokens are refused and whether key sets load.
func TestMetricsSayWhyTokensWereRefused(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newSetup(t, func(c *tokens.Config) { c.Registerer = reg })
	ctx := context.Background()
	verify := func(c oidctest.EntraClaims) {
		s.v.Verify(ctx, s.token(t, c))
	}
	good := s.claims(2)
	verify(good)
	verify(good) // cached: counted all the same
	expired := s.claims(2)
	expired.IssuedAt, expired.NotBefore, expired.Expiry = s.clock.now().Add(-2*time.Hour), s.clock.now().Add(-2*time.Hour), s.clock.now().Add(-time.Hour)
	verify(expired)
	wrongAud := s.claims(2)
	wrongAud.Audience = "api://someone-else"
	verify(wrongAud)
	s.v.Verify(ctx, "not a token")

	count := func(outcome, reason string) float64 {
		return promtest.Value(t, reg, "clusterconnect_token_verifications_total", map[string]string{"outcome": outcome, "reason": reason})
	}
	assert.Equal(t, 2.0, count("accepted", ""))
	assert.Equal(t, 1.0, count("refused", "expired"))
	assert.Equal(t, 1.0, count("refused", "audience"))
	assert.Equal(t, 1.0, count("refused", "malformed"))

	// A key set that cannot be fetched is counted as an error, per issuer.
	issuer := oidctest.EntraIssuer(tenantA, 2)
	assert.Equal(t, 1.0, promtest.Value(t, reg, "clusterconnect_token_key_refreshes_total", map[string]string{"issuer": issuer, "outcome": "ok"}))
	s.is.FailJWKS(http.StatusInternalServerError)
	_, err := s.is.Rotate() // a token with a key the verifier has not seen
	require.NoError(t, err)
	s.clock.add(2 * time.Minute) // past the minimum refresh interval
	_, err = s.v.Verify(ctx, s.token(t, s.claims(2)))
	require.ErrorIs(t, err, tokens.ErrUnknownKey)
	assert.Equal(t, 1.0, promtest.Value(t, reg, "clusterconnect_token_key_refreshes_total", map[string]string{"issuer": issuer, "outcome": "error"}))
	assert.Equal(t, 1.0, count("refused", "unknown_key"))

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}
