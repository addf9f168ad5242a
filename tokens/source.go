package tokens

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// ClientToken is a bearer token as a client holds it.
type ClientToken struct {
	Value string
	// Expiry is when the token stops being valid; zero when unknown.
	Expiry time.Time
}

// A TokenSource supplies the token a client sends. Implementations are safe
// for concurrent use.
type TokenSource interface {
	Token(ctx context.Context) (ClientToken, error)
}

// ErrNoToken is wrapped by errors of sources that produced no token.
var ErrNoToken = errors.New("tokens: no token")

// StaticTokenSource always returns the same token.
func StaticTokenSource(token string) TokenSource { return staticSource(token) }

type staticSource string

func (s staticSource) Token(context.Context) (ClientToken, error) {
	if s == "" {
		return ClientToken{}, fmt.Errorf("%w: the static token is empty", ErrNoToken)
	}
	return ClientToken{Value: string(s), Expiry: jwtExpiry(string(s))}, nil
}

// FileTokenSource reads the token from a file, again whenever the file
// changes (a projected service-account token, a token a sidecar renews).
func FileTokenSource(path string) TokenSource { return &fileSource{path: path} }

type fileSource struct {
	path string
	mu   sync.Mutex
	mod  time.Time
	size int64
	tok  ClientToken
}

func (f *fileSource) Token(context.Context) (ClientToken, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return ClientToken{}, fmt.Errorf("%w: %v", ErrNoToken, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tok.Value != "" && fi.ModTime().Equal(f.mod) && fi.Size() == f.size {
		return f.tok, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return ClientToken{}, fmt.Errorf("%w: %v", ErrNoToken, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return ClientToken{}, fmt.Errorf("%w: %s is empty", ErrNoToken, f.path)
	}
	f.tok, f.mod, f.size = ClientToken{Value: v, Expiry: jwtExpiry(v)}, fi.ModTime(), fi.Size()
	return f.tok, nil
}

// CommandTokenSource runs a command that prints a token: the bare token, or
// JSON as `az account get-access-token` prints it (accessToken with
// expires_on or expiresOn), an OAuth token response (access_token,
// expires_in), or a Kubernetes ExecCredential. Wrap it in
// NewCachedTokenSource so it runs only when the token is about to expire.
type CommandTokenSource struct {
	// Command and its arguments, e.g. {"az", "account", "get-access-token",
	// "--resource", "api://my-server-app", "-o", "json"}.
	Command []string
	// Env is added to the environment.
	Env []string
	// Timeout bounds one run; default 1 minute.
	Timeout time.Duration

	now func() time.Time
}

// Token runs the command.
func (c *CommandTokenSource) Token(ctx context.Context) (ClientToken, error) {
	if len(c.Command) == 0 {
		return ClientToken{}, fmt.Errorf("%w: no command configured", ErrNoToken)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Command[0], c.Command[1:]...)
	cmd.Env = append(os.Environ(), c.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[:2000] + "…"
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return ClientToken{}, fmt.Errorf("%w: token command %q failed: %v: %s", ErrNoToken, c.Command[0], err, msg)
	}
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	tok, err := parseTokenOutput(stdout.Bytes(), now)
	if err != nil {
		return ClientToken{}, fmt.Errorf("%w: token command %q: %v", ErrNoToken, c.Command[0], err)
	}
	return tok, nil
}

// parseTokenOutput reads what a token command printed. Errors never quote
// the output, which holds the token.
func parseTokenOutput(out []byte, now time.Time) (ClientToken, error) {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return ClientToken{}, errors.New("it printed nothing")
	}
	if out[0] != '{' {
		line, _, _ := strings.Cut(string(out), "\n")
		v := strings.TrimSpace(line)
		return ClientToken{Value: v, Expiry: jwtExpiry(v)}, nil
	}
	var doc struct {
		AccessToken  string          `json:"accessToken"`
		AccessToken2 string          `json:"access_token"`
		ExpiresOnNum json.Number     `json:"expires_on"`
		ExpiresOn    string          `json:"expiresOn"`
		ExpiresIn    json.Number     `json:"expires_in"`
		Kind         string          `json:"kind"`
		Status       *execCredStatus `json:"status"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return ClientToken{}, errors.New("its output is neither a token nor JSON")
	}
	tok := ClientToken{Value: doc.AccessToken}
	if tok.Value == "" {
		tok.Value = doc.AccessToken2
	}
	if doc.Kind == "ExecCredential" && doc.Status != nil {
		tok.Value = doc.Status.Token
		if t, err := time.Parse(time.RFC3339, doc.Status.ExpirationTimestamp); err == nil {
			tok.Expiry = t
		}
	}
	if tok.Value == "" {
		return ClientToken{}, errors.New("its JSON has no accessToken, access_token or status.token")
	}
	switch {
	case !tok.Expiry.IsZero():
	case doc.ExpiresOnNum != "":
		if n, err := strconv.ParseInt(string(doc.ExpiresOnNum), 10, 64); err == nil {
			tok.Expiry = time.Unix(n, 0)
		}
	case doc.ExpiresOn != "":
		// az prints local time without a zone: "2026-11-22 21:00:00.000000".
		for _, layout := range []string{time.RFC3339, "2006-01-02 15:04:05.999999", "2006-01-02 15:04:05"} {
			if t, err := time.ParseInLocation(layout, doc.ExpiresOn, time.Local); err == nil {
				tok.Expiry = t
				break
			}
		}
	case doc.ExpiresIn != "":
		if n, err := strconv.ParseInt(string(doc.ExpiresIn), 10, 64); err == nil {
			tok.Expiry = now.Add(time.Duration(n) * time.Second)
		}
	}
	if tok.Expiry.IsZero() {
		tok.Expiry = jwtExpiry(tok.Value)
	}
	return tok, nil
}

type execCredStatus struct {
	Token               string `json:"token"`
	ExpirationTimestamp string `json:"expirationTimestamp"`
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

// NewCachedTokenSource returns src with its token kept until refreshBefore
// its expiry (default 5 minutes, at most half the token's lifetime as
// seen). Concurrent callers share one fetch, each waiting on its own
// context. A token with no known expiry is kept for unknownTTL.
func NewCachedTokenSource(src TokenSource, refreshBefore time.Duration) TokenSource {
	if refreshBefore <= 0 {
		refreshBefore = 5 * time.Minute
	}
	return &cachedSource{src: src, before: refreshBefore, now: time.Now}
}

const unknownTTL = 5 * time.Minute

type cachedSource struct {
	src    TokenSource
	before time.Duration
	now    func() time.Time
	flight singleflight.Group

	mu      sync.Mutex
	tok     ClientToken
	fetched time.Time
}

func (c *cachedSource) Token(ctx context.Context) (ClientToken, error) {
	c.mu.Lock()
	tok, fetched := c.tok, c.fetched
	c.mu.Unlock()
	if tok.Value != "" && c.now().Before(c.refreshAt(tok, fetched)) {
		return tok, nil
	}
	ch := c.flight.DoChan("token", func() (any, error) {
		// Detached from any one caller: others may be waiting on it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		t, err := c.src.Token(ctx)
		if err != nil {
			return ClientToken{}, err
		}
		c.mu.Lock()
		c.tok, c.fetched = t, c.now()
		c.mu.Unlock()
		return t, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return ClientToken{}, r.Err
		}
		return r.Val.(ClientToken), nil
	case <-ctx.Done():
		return ClientToken{}, ctx.Err()
	}
}

func (c *cachedSource) refreshAt(tok ClientToken, fetched time.Time) time.Time {
	if tok.Expiry.IsZero() {
		return fetched.Add(unknownTTL)
	}
	before := min(c.before, tok.Expiry.Sub(fetched)/2)
	return tok.Expiry.Add(-before)
}
