package tokens

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/logx"
	"github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

const (
	maxDocumentSize = 1 << 20
	fetchTimeout    = 30 * time.Second
)

// DefaultRefreshWait is how long a token with an unknown key waits for the
// issuer's key set to be fetched again, when Config.RefreshWait is not set.
const DefaultRefreshWait = 3 * time.Second

// keySet is an issuer's signing keys, fetched through discovery and kept
// until a refresh succeeds. Refreshes are shared: however many callers need
// one, one request is made, and each caller waits on its own context.
type keySet struct {
	issuer      Issuer
	client      *http.Client
	minInterval time.Duration
	refreshWait time.Duration // how long one caller waits for a fetch
	now         func() time.Time
	log         *slog.Logger
	episodes    *logx.Episodes // per request, for a token with a key not yet seen
	metrics     *metrics
	flight      singleflight.Group

	mu          sync.RWMutex
	keys        []signingKey
	fetchedAt   time.Time
	maxAge      time.Duration // from Cache-Control; 0 means none given
	lastAttempt time.Time
	lastErr     error
	fetching    bool // a fetch is in flight: joining it costs nothing
}

// key returns the key for kid (which may be empty when the set has one
// key), refreshing the set if the key is unknown and the last fetch is old
// enough.
func (k *keySet) key(ctx context.Context, kid string) (*signingKey, error) {
	k.mu.RLock()
	keys, fetchedAt, maxAge := k.keys, k.fetchedAt, k.maxAge
	k.mu.RUnlock()

	if key, err := pick(keys, kid); key != nil || err != nil {
		if maxAge > 0 && k.now().After(fetchedAt.Add(maxAge)) && k.mayFetch() {
			// Stale by the server's own word: refresh in the background
			// and keep using what we have.
			k.flight.DoChan("refresh", k.fetch)
		}
		return key, err
	}
	if !k.mayFetch() {
		if len(keys) == 0 {
			return nil, k.unavailable()
		}
		return nil, claimError(ErrUnknownKey, "key %q is not in the key set of %s", kid, k.issuer.URL)
	}
	err := k.refreshWithin(ctx)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil && len(keys) == 0 {
		return nil, err
	}
	k.mu.RLock()
	keys = k.keys
	k.mu.RUnlock()
	key, err := pick(keys, kid)
	if key == nil && err == nil {
		if len(keys) == 0 {
			return nil, k.unavailable()
		}
		return nil, claimError(ErrUnknownKey, "key %q is not in the key set of %s", kid, k.issuer.URL)
	}
	return key, err
}

// refreshWithin waits for a shared refresh at most refreshWait: an issuer
// that accepts connections and never answers must not hold every request
// with a new key for the whole fetch timeout. The fetch itself goes on in
// the background and serves later callers.
func (k *keySet) refreshWithin(ctx context.Context) error {
	wctx, cancel := context.WithTimeoutCause(ctx, k.refreshWait, errRefreshSlow)
	defer cancel()
	err := k.refresh(wctx)
	if ctx.Err() == nil && errors.Is(context.Cause(wctx), errRefreshSlow) {
		k.episodes.Warn("key set refresh is slow; answering without it", "issuer", k.issuer.URL, "waited", k.refreshWait)
		return fmt.Errorf("%w: %s: no answer within %s", ErrKeySet, k.issuer.URL, k.refreshWait)
	}
	return err
}

var errRefreshSlow = errors.New("key set refresh slower than the refresh wait")

// holds reports whether the current key set still has the key with this
// thumbprint: a token verified with a key the issuer has since withdrawn
// must not be accepted again from a cache.
func (k *keySet) holds(thumbprint string) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return hasKey(k.keys, thumbprint)
}

// known reports whether any keys have been fetched.
func (k *keySet) known() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.keys) > 0
}

// hasKey scans keys: an issuer publishes a handful.
func hasKey(keys []signingKey, thumbprint string) bool {
	for i := range keys {
		if keys[i].thumbprint == thumbprint {
			return true
		}
	}
	return false
}

// signingKey is a key of the set with its RFC 7638 SHA-256 thumbprint,
// which names it in cached results.
type signingKey struct {
	jose.JSONWebKey
	thumbprint string
}

func newSigningKeys(keys []jose.JSONWebKey) []signingKey {
	out := make([]signingKey, len(keys))
	for i, key := range keys {
		tp, _ := key.Thumbprint(crypto.SHA256) // fails only for key types download drops
		out[i] = signingKey{JSONWebKey: key, thumbprint: string(tp)}
	}
	return out
}

func (k *keySet) unavailable() error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.lastErr != nil {
		return fmt.Errorf("%w: %s: %v", ErrKeySet, k.issuer.URL, k.lastErr)
	}
	return fmt.Errorf("%w: %s", ErrKeySet, k.issuer.URL)
}

// pick finds kid in keys. A token without kid is accepted only when the set
// has exactly one key: otherwise the verifier would have to try them all.
func pick(keys []signingKey, kid string) (*signingKey, error) {
	if kid == "" {
		switch len(keys) {
		case 0:
			return nil, nil
		case 1:
			return &keys[0], nil
		}
		return nil, claimError(ErrMalformed, "the token has no kid and the issuer has %d keys", len(keys))
	}
	for i := range keys {
		if keys[i].KeyID == kid {
			return &keys[i], nil
		}
	}
	return nil, nil
}

func (k *keySet) mayFetch() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.fetching || k.lastAttempt.IsZero() || k.now().Sub(k.lastAttempt) >= k.minInterval
}

// refresh fetches the key set once for all concurrent callers.
func (k *keySet) refresh(ctx context.Context) error {
	select {
	case r := <-k.flight.DoChan("refresh", k.fetch):
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetch runs on its own context: it is shared by callers whose contexts
// may end at any time.
func (k *keySet) fetch() (any, error) {
	k.mu.Lock()
	k.lastAttempt = k.now()
	k.fetching = true
	k.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	keys, maxAge, err := k.download(ctx)
	k.metrics.refreshed(k.issuer.URL, err)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fetching = false
	if err != nil {
		k.lastErr = err
		k.log.Warn("key set refresh failed; keeping the last good keys", "issuer", k.issuer.URL, "keys", len(k.keys), "err", err)
		return nil, fmt.Errorf("%w: %s: %v", ErrKeySet, k.issuer.URL, err)
	}
	signing := newSigningKeys(keys)
	withdrawn := 0
	for _, old := range k.keys {
		if !hasKey(signing, old.thumbprint) {
			withdrawn++
		}
	}
	k.keys, k.fetchedAt, k.maxAge, k.lastErr = signing, k.now(), maxAge, nil
	k.log.Info("key set refreshed", "issuer", k.issuer.URL, "keys", len(keys), "withdrawn", withdrawn)
	return nil, nil
}

func (k *keySet) download(ctx context.Context) ([]jose.JSONWebKey, time.Duration, error) {
	jwksURL := k.issuer.JWKSURL
	if jwksURL == "" {
		var err error
		if jwksURL, err = k.discover(ctx); err != nil {
			return nil, 0, err
		}
	}
	var set jose.JSONWebKeySet
	header, err := k.getJSON(ctx, jwksURL, &set)
	if err != nil {
		return nil, 0, err
	}
	var keys []jose.JSONWebKey
	for _, key := range set.Keys {
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		switch key.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		return nil, 0, fmt.Errorf("key set %s has no public signing keys", jwksURL)
	}
	return keys, maxAge(header.Get("Cache-Control")), nil
}

func (k *keySet) discover(ctx context.Context) (string, error) {
	u := k.issuer.DiscoveryURL
	if u == "" {
		u = strings.TrimSuffix(k.issuer.URL, "/") + "/.well-known/openid-configuration"
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if _, err := k.getJSON(ctx, u, &doc); err != nil {
		return "", err
	}
	if doc.Issuer != k.issuer.URL {
		return "", fmt.Errorf("discovery document %s is for issuer %q, not %q", u, doc.Issuer, k.issuer.URL)
	}
	if !strings.HasPrefix(doc.JWKSURI, "https://") {
		return "", fmt.Errorf("discovery document %s has no https jwks_uri", u)
	}
	return doc.JWKSURI, nil
}

func (k *keySet) getJSON(ctx context.Context, u string, v any) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentSize))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "" && ct != "application/json" && !strings.HasSuffix(ct, "+json") {
		return nil, fmt.Errorf("%s: content type %q, want application/json", u, ct)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	return resp.Header, nil
}

// maxAge reads max-age from a Cache-Control header; 0 when absent.
func maxAge(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		if strings.EqualFold(name, "max-age") {
			if n, err := strconv.Atoi(strings.Trim(val, `"`)); err == nil && n > 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}
