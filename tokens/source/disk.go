package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// A Fetcher gets a new token. last is the token the cache held, expired or
// about to, or nil when it held none; a fetcher whose flow gives refresh
// tokens uses last.RefreshToken before asking the user again.
type Fetcher interface {
	Fetch(ctx context.Context, last *oauth2.Token) (*oauth2.Token, error)
}

// FetcherFunc adapts a function to a Fetcher.
type FetcherFunc func(ctx context.Context, last *oauth2.Token) (*oauth2.Token, error)

// Fetch calls f.
func (f FetcherFunc) Fetch(ctx context.Context, last *oauth2.Token) (*oauth2.Token, error) {
	return f(ctx, last)
}

// FromTokenSource adapts a TokenSource, which has no use for the last
// token, to a Fetcher.
func FromTokenSource(src oauth2.TokenSource) Fetcher {
	return FetcherFunc(func(context.Context, *oauth2.Token) (*oauth2.Token, error) { return src.Token() })
}

// DiskCache keeps tokens in files, one per key, so that each kubectl
// call's exec plugin, a restarted proxy and the next step of a CI job reuse
// a token instead of signing in again. Files are 0600 in a 0700 directory,
// written atomically; a lock file per key makes concurrent processes wait
// for one fetch and share its result instead of each signing in.
//
// A zero DiskCache is valid and uses [DefaultCacheDir].
type DiskCache struct {
	// Dir holds the cache files; default [DefaultCacheDir].
	Dir string
	// EarlyExpiry is how long before its expiry a cached token is replaced;
	// default DefaultEarlyExpiry.
	EarlyExpiry time.Duration

	now func() time.Time
}

// DefaultCacheDir is clusterconnect/tokens under the user's cache
// directory ($XDG_CACHE_HOME or ~/.cache on Linux).
func DefaultCacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("source: no cache directory for tokens (set XDG_CACHE_HOME or HOME): %w", err)
	}
	return filepath.Join(dir, "clusterconnect", "tokens"), nil
}

// cachedToken is what a cache file holds. Key is kept so that a listing
// can say what a file is for.
type cachedToken struct {
	Key   string        `json:"key"`
	Token *oauth2.Token `json:"token"`
}

// TokenSource returns a source that answers from the cache file for key
// while its token is fresh, and otherwise asks f, giving it the cached
// token, and stores the answer. Concurrent callers, in this process or
// another, wait for one fetch. Errors never contain a token.
func (c *DiskCache) TokenSource(key string, f Fetcher) oauth2.TokenSource {
	return &diskSource{cache: c, key: key, fetcher: f}
}

type diskSource struct {
	cache   *DiskCache
	key     string
	fetcher Fetcher
}

func (s *diskSource) Token() (*oauth2.Token, error) {
	return s.cache.token(context.Background(), s.key, s.fetcher)
}

func (c *DiskCache) dir() (string, error) {
	if c.Dir != "" {
		return c.Dir, nil
	}
	return DefaultCacheDir()
}

func (c *DiskCache) fresh(t *oauth2.Token) bool {
	early := c.EarlyExpiry
	if early <= 0 {
		early = DefaultEarlyExpiry
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	return t != nil && t.AccessToken != "" && !t.Expiry.IsZero() && now().Add(early).Before(t.Expiry)
}

// fileName is the key's file name: a hash, so that keys holding URLs and
// scopes make safe names.
func fileName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

func (c *DiskCache) token(ctx context.Context, key string, f Fetcher) (*oauth2.Token, error) {
	dir, err := c.dir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fileName(key)+".json")
	// Read without the lock first: the common case, a fresh token, then
	// costs one read.
	if last, _ := readCached(path, key); c.fresh(last) {
		return last, nil
	}
	unlock, err := lock(ctx, dir, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another process may have fetched while this one waited.
	last, _ := readCached(path, key)
	if c.fresh(last) {
		return last, nil
	}
	return c.store(ctx, path, key, f, last)
}

// store asks f, giving it last, and keeps what it answers in path; the
// caller holds the key's lock.
func (c *DiskCache) store(ctx context.Context, path, key string, f Fetcher, last *oauth2.Token) (*oauth2.Token, error) {
	tok, err := f.Fetch(ctx, last)
	if err != nil {
		return nil, err
	}
	if tok == nil || tok.AccessToken == "" {
		return nil, fmt.Errorf("%w: the sign-in gave an empty token", ErrNoToken)
	}
	if tok.Expiry.IsZero() {
		tok.Expiry = jwtExpiry(tok.AccessToken)
	}
	// A token without an expiry is used but not kept: it could not be
	// told from a stale one later.
	if !tok.Expiry.IsZero() {
		if err := writeCached(path, cachedToken{Key: key, Token: tok}); err != nil {
			return nil, err
		}
	}
	return tok, nil
}

// Replace asks f for a new token for key even though the cached one may
// be fresh — a claims challenge asks for more than it carries — giving
// f the cached token (for its refresh token), and stores the answer, under
// the key's lock as TokenSource does.
func (c *DiskCache) Replace(ctx context.Context, key string, f Fetcher) (*oauth2.Token, error) {
	dir, err := c.dir()
	if err != nil {
		return nil, err
	}
	unlock, err := lock(ctx, dir, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	path := filepath.Join(dir, fileName(key)+".json")
	last, _ := readCached(path, key)
	return c.store(ctx, path, key, f, last)
}

// lock takes key's lock file in dir, making dir if need be.
func lock(ctx context.Context, dir, key string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("source: token cache: %w", err)
	}
	unlock, err = lockFile(ctx, filepath.Join(dir, fileName(key)+".lock"))
	if err != nil {
		return nil, fmt.Errorf("source: token cache: %w", err)
	}
	return unlock, nil
}

func readCached(path, key string) (*oauth2.Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ct cachedToken
	if err := json.Unmarshal(b, &ct); err != nil || ct.Key != key || ct.Token == nil {
		return nil, errors.New("source: unreadable cache file")
	}
	return ct.Token, nil
}

func writeCached(path string, ct cachedToken) error {
	b, err := json.Marshal(ct)
	if err != nil {
		return fmt.Errorf("source: token cache: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("source: token cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	// CreateTemp makes the file 0600 already; Chmod says so for readers.
	if err := tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(b)
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
		if err == nil {
			return nil
		}
	}
	tmp.Close()
	return fmt.Errorf("source: token cache: writing %s: %w", path, err)
}

// Remove deletes the cached token for key, so that the next use signs in
// again. Removing a key that has no token is not an error.
func (c *DiskCache) Remove(key string) error {
	dir, err := c.dir()
	if err != nil {
		return err
	}
	err = os.Remove(filepath.Join(dir, fileName(key)+".json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("source: token cache: %w", err)
	}
	return nil
}

// Clear deletes every cached token and returns how many there were.
func (c *DiskCache) Clear() (int, error) {
	dir, err := c.dir()
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("source: token cache: %w", err)
	}
	n := 0
	var errs []error
	for _, e := range entries {
		name := e.Name()
		// Lock files stay: a process may be waiting on one.
		if !strings.HasSuffix(name, ".json") && !strings.HasPrefix(name, ".tmp-") {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		if strings.HasSuffix(name, ".json") {
			n++
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("source: token cache: %w", err)
	}
	return n, nil
}

// FromFetcher returns a source that asks f for every token, giving it the
// last one it returned (so that a flow can use its refresh token), and
// keeps nothing on disk. Wrap it in Cached to reuse tokens in memory.
func FromFetcher(f Fetcher) oauth2.TokenSource { return &memorySource{fetcher: f} }

type memorySource struct {
	fetcher Fetcher
	mu      sync.Mutex
	last    *oauth2.Token
}

func (m *memorySource) Token() (*oauth2.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tok, err := m.fetcher.Fetch(context.Background(), m.last)
	if err != nil {
		return nil, err
	}
	m.last = tok
	return tok, nil
}
