package tokens

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"sync"
	"time"
)

// cache remembers verification results by an HMAC of the token, so a token
// is never stored and the keys cannot be matched against a guessed token
// without the process's random key. It is bounded: when full, the oldest
// entry goes (first in, first out, which for tokens of similar lifetimes is
// close to least recently issued).
type cache struct {
	size int
	pool sync.Pool // hash.Hash, keyed with secret

	mu      sync.Mutex
	entries map[[sha256.Size]byte]cacheEntry
	order   [][sha256.Size]byte // ring of keys in insertion order
	next    int
}

type cacheEntry struct {
	tok    *Token
	signer signer // for a verified token: the key that verified it
	err    error
	until  time.Time
}

func newCache(size int) *cache {
	if size <= 0 {
		return nil
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		panic("tokens: reading random bytes: " + err.Error())
	}
	c := &cache{size: size, entries: make(map[[sha256.Size]byte]cacheEntry, size), order: make([][sha256.Size]byte, 0, size)}
	c.pool.New = func() any { return hmac.New(sha256.New, secret) }
	return c
}

func (c *cache) key(raw string) (k [sha256.Size]byte) {
	h := c.pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(raw))
	h.Sum(k[:0])
	c.pool.Put(h)
	return k
}

// get returns a result stored for the key that is still valid at now.
func (c *cache) get(k [sha256.Size]byte, now time.Time) (cacheEntry, bool) {
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if !ok || !now.Before(e.until) {
		return cacheEntry{}, false
	}
	return e, true
}

func (c *cache) put(k [sha256.Size]byte, e cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; ok {
		c.entries[k] = e
		return
	}
	if len(c.order) < c.size {
		c.order = append(c.order, k)
	} else {
		delete(c.entries, c.order[c.next])
		c.order[c.next] = k
		c.next = (c.next + 1) % c.size
	}
	c.entries[k] = e
}
