package source_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// counting is a fetcher that hands out numbered tokens and remembers what
// it was given.
type counting struct {
	n      int
	last   []*oauth2.Token
	expiry time.Duration
	err    error
}

func (c *counting) Fetch(_ context.Context, last *oauth2.Token) (*oauth2.Token, error) {
	c.n++
	c.last = append(c.last, last)
	if c.err != nil {
		return nil, c.err
	}
	tok := &oauth2.Token{AccessToken: "token-" + string(rune('0'+c.n)), RefreshToken: "rt", TokenType: "Bearer"}
	if c.expiry != 0 {
		tok.Expiry = time.Now().Add(c.expiry)
	}
	return tok, nil
}

func TestDiskCache(t *testing.T) {
	t.Run("fresh token reused, stale one handed to the fetcher", func(t *testing.T) {
		dir := t.TempDir()
		f := &counting{expiry: time.Hour}
		for range 3 {
			tok, err := (&source.DiskCache{Dir: dir}).TokenSource("k", f).Token()
			require.NoError(t, err)
			assert.Equal(t, "token-1", tok.AccessToken)
		}
		assert.Equal(t, 1, f.n)
		assert.Nil(t, f.last[0])

		// Within the early-expiry margin: fetched again, with the old token.
		tok, err := (&source.DiskCache{Dir: dir, EarlyExpiry: 2 * time.Hour}).TokenSource("k", f).Token()
		require.NoError(t, err)
		assert.Equal(t, "token-2", tok.AccessToken)
		require.Len(t, f.last, 2)
		require.NotNil(t, f.last[1])
		assert.Equal(t, "rt", f.last[1].RefreshToken, "the fetcher gets the refresh token")
	})
	t.Run("keys do not share", func(t *testing.T) {
		dir := t.TempDir()
		f := &counting{expiry: time.Hour}
		a, err := (&source.DiskCache{Dir: dir}).TokenSource("a", f).Token()
		require.NoError(t, err)
		b, err := (&source.DiskCache{Dir: dir}).TokenSource("b", f).Token()
		require.NoError(t, err)
		assert.NotEqual(t, a.AccessToken, b.AccessToken)
		require.NoError(t, (&source.DiskCache{Dir: dir}).Remove("a"))
		_, err = (&source.DiskCache{Dir: dir}).TokenSource("a", f).Token()
		require.NoError(t, err)
		_, err = (&source.DiskCache{Dir: dir}).TokenSource("b", f).Token()
		require.NoError(t, err)
		assert.Equal(t, 3, f.n, "removing a signs a in again, b stays")
	})
	t.Run("a failed fetch writes nothing", func(t *testing.T) {
		dir := t.TempDir()
		f := &counting{err: errors.New("refused")}
		_, err := (&source.DiskCache{Dir: dir}).TokenSource("k", f).Token()
		require.ErrorContains(t, err, "refused")
		n, err := (&source.DiskCache{Dir: dir}).Clear()
		require.NoError(t, err)
		assert.Zero(t, n)
	})
	t.Run("a token without expiry is used, not kept", func(t *testing.T) {
		dir := t.TempDir()
		f := &counting{}
		for range 2 {
			_, err := (&source.DiskCache{Dir: dir}).TokenSource("k", f).Token()
			require.NoError(t, err)
		}
		assert.Equal(t, 2, f.n)
	})
	t.Run("a damaged file is replaced", func(t *testing.T) {
		dir := t.TempDir()
		f := &counting{expiry: time.Hour}
		_, err := (&source.DiskCache{Dir: dir}).TokenSource("k", f).Token()
		require.NoError(t, err)
		files, err := filepath.Glob(filepath.Join(dir, "*.json"))
		require.NoError(t, err)
		require.Len(t, files, 1)
		require.NoError(t, os.WriteFile(files[0], []byte("{not json"), 0o600))
		tok, err := (&source.DiskCache{Dir: dir}).TokenSource("k", f).Token()
		require.NoError(t, err)
		assert.Equal(t, "token-2", tok.AccessToken)
	})
}
