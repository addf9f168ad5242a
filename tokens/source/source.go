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
	c, _ := ReadUnverified(tok)
	return c.Expiry
}

// Unverified is what a client may read of its own JWT access token without
// verifying it, to say what is wrong before sending it: the server decides.
type Unverified struct {
	Expiry   time.Time // exp; zero if absent
	TenantID string    // tid (Entra ID); "" if absent
}

// ReadUnverified reads tok's claims without verifying them; ok is false if
// tok is not a JWT with a JSON claim set (an opaque token, a PoP token's
// wrapper reads as one without these claims).
func ReadUnverified(tok string) (c Unverified, ok bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return c, false
	}
	var raw struct {
		Exp json.Number `json:"exp"`
		Tid string      `json:"tid"`
	}
	if json.Unmarshal(b, &raw) != nil {
		return c, false
	}
	if n, err := raw.Exp.Float64(); err == nil && n > 0 {
		c.Expiry = time.Unix(int64(n), 0)
	}
	c.TenantID = raw.Tid
	return c, true
}
