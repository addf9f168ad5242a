package relay

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The agents file is re-read while the relay runs: a cluster added to it
// can connect, one removed from it no longer can, and a broken or missing
// file keeps the one in force.
func TestAgentsFileIsReRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "agents.json")
		write := func(s string) { require.NoError(t, os.WriteFile(path, []byte(s), 0o600)) }
		write(`{"clusters":{"old":{"secret":"s1"}}}`)
		s := &Server{cfg: Config{AgentsFile: path, ReloadInterval: DefaultReloadInterval}, log: slog.New(slog.DiscardHandler)}
		agents, err := s.agents(nil)
		require.NoError(t, err)
		require.Len(t, s.reloads, 1)
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); s.reloads[0](ctx) }()
		authenticate := func(id, secret string) error { return agents.Authenticate(ctx, id, secret) }
		require.NoError(t, authenticate("old", "s1"))

		write(`{"clusters":{"new":{"secret":"s2"}}}`)
		time.Sleep(DefaultReloadInterval + time.Millisecond)
		assert.NoError(t, authenticate("new", "s2"), "added")
		assert.Error(t, authenticate("old", "s1"), "removed")

		for _, broken := range []string{`{"clusters":`, `{"clusters":{}}`} {
			write(broken)
			time.Sleep(DefaultReloadInterval)
			assert.NoError(t, authenticate("new", "s2"), "%s keeps the list in force", broken)
		}
		require.NoError(t, os.Remove(path))
		time.Sleep(DefaultReloadInterval)
		assert.NoError(t, authenticate("new", "s2"), "a missing file keeps the list in force")
		stop()
		<-done
	})
}
