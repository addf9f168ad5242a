package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/clusterconnect/clusterconnect/tokens"
)

// Defaults.
const (
	// DefaultEndpoint is Microsoft Graph in the public cloud.
	DefaultEndpoint      = "https://graph.microsoft.com"
	DefaultCacheTTL      = 5 * time.Minute
	DefaultCacheSize     = 10_000
	DefaultMaxConcurrent = 8
	DefaultTimeout       = 10 * time.Second
	// maxPages bounds how many pages one lookup follows.
	maxPages = 100
	// maxBody bounds one Graph answer.
	maxBody = 4 << 20
)

// ErrGraph is wrapped by every lookup error.
var ErrGraph = errors.New("graph: cannot resolve the user's groups")

// Config configures a Resolver.
type Config struct {
	// TokenSource gives the cluster's own app-only token for Graph (scope
	// https://graph.microsoft.com/.default); the app needs the
	// GroupMember.Read.All or Directory.Read.All application permission.
	// Required.
	TokenSource oauth2.TokenSource
	// Endpoint is Graph's base URL; default DefaultEndpoint (national
	// clouds have their own).
	Endpoint string
	// HTTPClient makes the requests; nil means http.DefaultClient (each
	// lookup is bounded by Timeout all the same).
	HTTPClient *http.Client
	// SecurityEnabledOnly asks for security groups only.
	SecurityEnabledOnly bool
	// CacheTTL is how long a user's groups are reused; default
	// DefaultCacheTTL.
	CacheTTL time.Duration
	// CacheSize bounds how many users' groups are kept; default
	// DefaultCacheSize.
	CacheSize int
	// MaxConcurrent bounds lookups in flight; default DefaultMaxConcurrent.
	// Callers past it wait, within their own context.
	MaxConcurrent int
	// Timeout bounds one lookup, throttling included; default
	// DefaultTimeout.
	Timeout time.Duration
}

// Resolver looks users' groups up in Graph. It is safe for concurrent use.
type Resolver struct {
	cfg    Config
	client *http.Client
	slots  chan struct{}
	flight singleflight.Group
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	groups []string
	until  time.Time
}

// New returns a Resolver for cfg.
func New(cfg *Config) (*Resolver, error) {
	if cfg == nil || cfg.TokenSource == nil {
		return nil, errors.New("graph: Config.TokenSource is required: the cluster's own token for Microsoft Graph")
	}
	c := *cfg
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	c.Endpoint = strings.TrimSuffix(c.Endpoint, "/")
	if c.CacheTTL <= 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.CacheSize <= 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	client := c.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	return &Resolver{cfg: c, client: client, slots: make(chan struct{}, c.MaxConcurrent), now: time.Now, cache: map[string]cached{}}, nil
}

// ResolveGroups returns the groups of the token's user or service
// principal (its oid), from the cache or Graph.
func (r *Resolver) ResolveGroups(ctx context.Context, tok *tokens.Token) ([]string, error) {
	oid := tok.StringClaim("oid")
	if oid == "" {
		return nil, fmt.Errorf("%w: the token has no oid", ErrGraph)
	}
	key := tok.TenantID + "/" + oid
	if groups, ok := r.cached(key); ok {
		return groups, nil
	}
	// Concurrent requests of one user share a lookup, each waiting on its
	// own context.
	ch := r.flight.DoChan(key, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Timeout)
		defer cancel()
		select {
		case r.slots <- struct{}{}:
			defer func() { <-r.slots }()
		case <-lctx.Done():
			return nil, fmt.Errorf("%w: too many lookups in flight: %v", ErrGraph, lctx.Err())
		}
		groups, err := r.lookup(lctx, oid)
		if err == nil {
			r.store(key, groups)
		}
		return groups, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.([]string), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrGraph, ctx.Err())
	}
}

func (r *Resolver) cached(key string) ([]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cache[key]
	if !ok || !r.now().Before(c.until) {
		return nil, false
	}
	return c.groups, true
}

func (r *Resolver) store(key string, groups []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if len(r.cache) >= r.cfg.CacheSize {
		for k, c := range r.cache {
			if !now.Before(c.until) {
				delete(r.cache, k)
			}
		}
		// Still full of live entries: drop one; the map's order is as good
		// as any.
		for k := range r.cache {
			if len(r.cache) < r.cfg.CacheSize {
				break
			}
			delete(r.cache, k)
		}
	}
	r.cache[key] = cached{groups: groups, until: now.Add(r.cfg.CacheTTL)}
}

// lookup asks Graph, following pages and waiting out throttling.
func (r *Resolver) lookup(ctx context.Context, oid string) ([]string, error) {
	body, _ := json.Marshal(map[string]bool{"securityEnabledOnly": r.cfg.SecurityEnabledOnly})
	method, u := http.MethodPost, r.cfg.Endpoint+"/v1.0/directoryObjects/"+url.PathEscape(oid)+"/getMemberObjects"
	var groups []string
	for range maxPages {
		var page struct {
			Value    []string `json:"value"`
			NextLink string   `json:"@odata.nextLink"`
		}
		if err := r.call(ctx, method, u, body, &page); err != nil {
			return nil, err
		}
		groups = append(groups, page.Value...)
		if page.NextLink == "" {
			return groups, nil
		}
		next, err := url.Parse(page.NextLink)
		if err != nil || !strings.HasPrefix(page.NextLink, r.cfg.Endpoint+"/") {
			return nil, fmt.Errorf("%w: a next page outside Graph: %q", ErrGraph, page.NextLink)
		}
		method, u, body = http.MethodGet, next.String(), nil
	}
	return nil, fmt.Errorf("%w: more than %d pages", ErrGraph, maxPages)
}

// call makes one Graph request, retrying while Graph throttles and ctx
// lasts.
func (r *Resolver) call(ctx context.Context, method, u string, body []byte, out any) error {
	for {
		tok, err := r.cfg.TokenSource.Token()
		if err != nil {
			return fmt.Errorf("%w: the cluster's own token for Graph: %v", ErrGraph, err)
		}
		var rd io.Reader
		if body != nil {
			rd = strings.NewReader(string(body))
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rd)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrGraph, err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := r.client.Do(req)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrGraph, err)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrGraph, err)
		}
		switch {
		case resp.StatusCode == http.StatusOK:
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("%w: Graph's answer is not the JSON expected", ErrGraph)
			}
			return nil
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
			wait := retryAfter(resp.Header.Get("Retry-After"))
			if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
				return fmt.Errorf("%w: Graph is throttling (Retry-After %s), longer than the lookup may take", ErrGraph, wait)
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return fmt.Errorf("%w: %v", ErrGraph, ctx.Err())
			}
		default:
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			json.Unmarshal(data, &e)
			return fmt.Errorf("%w: Graph answered %s: %s %s", ErrGraph, resp.Status, e.Error.Code, e.Error.Message)
		}
	}
}

// retryAfter reads Retry-After in seconds; 1 s when absent or unreadable.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return time.Second
	}
	return time.Duration(n) * time.Second
}
