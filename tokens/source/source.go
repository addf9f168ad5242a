package source

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// ErrNoToken is wrapped by the errors of sources that produced no token.
var ErrNoToken = errors.New("source: no token")

// DefaultEarlyExpiry is how long before its expiry Cached replaces a token.
const DefaultEarlyExpiry = 5 * time.Minute

// Cached returns src with its token reused until earlyExpiry before it
// expires (DefaultEarlyExpiry when zero or less); concurrent callers share
// one fetch. Sources here always give an expiry, so a cached token is
// never used forever: a token that says nothing of its own expiry is given
// one a few minutes away.
func Cached(src oauth2.TokenSource, earlyExpiry time.Duration) oauth2.TokenSource {
	if earlyExpiry <= 0 {
		earlyExpiry = DefaultEarlyExpiry
	}
	return oauth2.ReuseTokenSourceWithExpiry(nil, src, earlyExpiry)
}

// Static always returns the same token.
func Static(token string) oauth2.TokenSource { return staticSource(token) }

type staticSource string

func (s staticSource) Token() (*oauth2.Token, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: the static token is empty", ErrNoToken)
	}
	return bearer(string(s), jwtExpiry(string(s))), nil
}

// File reads the token from a file, again whenever the file changes.
func File(path string) oauth2.TokenSource { return &fileSource{path: path} }

type fileSource struct {
	path string
	mu   sync.Mutex
	mod  time.Time
	size int64
	tok  *oauth2.Token
}

func (f *fileSource) Token() (*oauth2.Token, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoToken, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tok != nil && fi.ModTime().Equal(f.mod) && fi.Size() == f.size {
		return f.tok, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoToken, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return nil, fmt.Errorf("%w: %s is empty", ErrNoToken, f.path)
	}
	f.tok, f.mod, f.size = bearer(v, jwtExpiry(v)), fi.ModTime(), fi.Size()
	return f.tok, nil
}

func bearer(v string, expiry time.Time) *oauth2.Token {
	return &oauth2.Token{AccessToken: v, TokenType: "Bearer", Expiry: expiry}
}

// jwtExpiry reads exp from a JWT without verifying it: the client only
// needs to know when to fetch a new one. Zero if it is not a JWT.
func jwtExpiry(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil {
		return time.Time{}
	}
	n, err := c.Exp.Float64()
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(n), 0)
}
