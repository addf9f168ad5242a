package tokens

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Verifier's Prometheus metrics; nil observes nothing.
type metrics struct {
	verifications *prometheus.CounterVec // outcome, reason
	refreshes     *prometheus.CounterVec // issuer, outcome
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clusterconnect_token_verifications_total",
			Help: "Bearer tokens verified, by outcome (accepted, refused) and the reason for a refusal; cached results count too.",
		}, []string{"outcome", "reason"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clusterconnect_token_key_refreshes_total",
			Help: "Fetches of an issuer's key set (JWKS), by issuer and outcome (ok, error).",
		}, []string{"issuer", "outcome"}),
	}
	for _, c := range []prometheus.Collector{m.verifications, m.refreshes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// reasons name each refusal's sentinel, a bounded set of label values.
var reasons = []struct {
	err  error
	name string
}{
	{ErrMalformed, "malformed"}, {ErrAlgorithm, "algorithm"}, {ErrIssuer, "issuer"},
	{ErrAudience, "audience"}, {ErrVersion, "version"}, {ErrTenant, "tenant"},
	{ErrExpired, "expired"}, {ErrNotYetValid, "not_yet_valid"}, {ErrMissingClaim, "missing_claim"},
	{ErrUnknownKey, "unknown_key"}, {ErrSignature, "signature"}, {ErrKeySet, "keys_unavailable"},
	{ErrPoPSignature, "pop_signature"}, {ErrPoPStale, "pop_stale"}, {ErrPoPHost, "pop_host"},
	{ErrPoPBinding, "pop_binding"}, {ErrPoPReplayed, "pop_replayed"}, {ErrPoPRequired, "pop_required"}, {ErrPoP, "pop_malformed"},
}

func (m *metrics) verified(err error) {
	if m == nil {
		return
	}
	if err == nil {
		m.verifications.WithLabelValues("accepted", "").Inc()
		return
	}
	reason := "other"
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			reason = r.name
			break
		}
	}
	m.verifications.WithLabelValues("refused", reason).Inc()
}

func (m *metrics) refreshed(issuer string, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.refreshes.WithLabelValues(issuer, outcome).Inc()
}
