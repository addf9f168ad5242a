package logx

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Episodes logs what a caller outside the project's control can make
// happen on every request (a hanging identity provider, a flood of
// refusals): one line when an episode begins, and at the end of each
// window in which it went on, one line saying how many times it happened
// meanwhile. An unauthenticated caller so chooses no more than two lines
// per window per message, however many requests it sends. Messages are
// the keys: pass only messages the code chooses, never a caller's words.
type Episodes struct {
	log    *slog.Logger
	window time.Duration

	mu   sync.Mutex
	open map[string]*episode
}

type episode struct {
	level slog.Level
	args  []any // the last occurrence's
	n     int   // occurrences in this window, past the one logged
}

// DefaultEpisodeWindow is an episode's window unless NewEpisodes is told
// otherwise.
const DefaultEpisodeWindow = time.Minute

// NewEpisodes logs episodes to l (nil: nowhere), summed per window
// (DefaultEpisodeWindow if zero).
func NewEpisodes(l *slog.Logger, window time.Duration) *Episodes {
	if window <= 0 {
		window = DefaultEpisodeWindow
	}
	return &Episodes{log: OrDiscard(l), window: window, open: map[string]*episode{}}
}

// Warn logs msg with args at warning level, once per episode.
func (e *Episodes) Warn(msg string, args ...any) { e.note(slog.LevelWarn, msg, args) }

// Error logs msg with args at error level, once per episode.
func (e *Episodes) Error(msg string, args ...any) { e.note(slog.LevelError, msg, args) }

func (e *Episodes) note(level slog.Level, msg string, args []any) {
	e.mu.Lock()
	if ep := e.open[msg]; ep != nil {
		ep.n++
		ep.args = args
		e.mu.Unlock()
		return
	}
	e.open[msg] = &episode{level: level}
	e.mu.Unlock()
	e.log.Log(context.Background(), level, msg, args...)
	time.AfterFunc(e.window, func() { e.tick(msg) })
}

// tick ends msg's window: a line for what repeated in it, and another
// window if it did; the episode is over if nothing did.
func (e *Episodes) tick(msg string) {
	e.mu.Lock()
	ep := e.open[msg]
	if ep.n == 0 {
		delete(e.open, msg)
		e.mu.Unlock()
		return
	}
	n, args, level := ep.n, ep.args, ep.level
	ep.n, ep.args = 0, nil
	e.mu.Unlock()
	e.log.Log(context.Background(), level, msg, append(args, "repeated", n, "within", e.window)...)
	time.AfterFunc(e.window, func() { e.tick(msg) })
}
