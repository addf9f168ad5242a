package logx_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/clusterconnect/clusterconnect/internal/logx"
)

type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.buf.String()), "\n")
}

// 201 failures in a burst are two lines: the first, and one with the
// count at the end of its window; the episode then ends, and the next
// failure, later, is a line again.
func TestEpisodesAreTwoLinesPerWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &lines{}
		e := logx.NewEpisodes(slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{ReplaceAttr: dropTime})), time.Minute)
		for i := range 201 {
			e.Warn("key set refresh is slow", "request", i)
		}
		assert.Equal(t, []string{`level=WARN msg="key set refresh is slow" request=0`}, out.all())
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Equal(t, `level=WARN msg="key set refresh is slow" request=200 repeated=200 within=1m0s`, out.all()[1])
		time.Sleep(time.Minute) // a window with none: the episode is over
		synctest.Wait()
		assert.Len(t, out.all(), 2)
		e.Warn("key set refresh is slow", "request", 201)
		e.Error("another message", "n", 1)
		assert.Equal(t, []string{`level=WARN msg="key set refresh is slow" request=201`, `level=ERROR msg="another message" n=1`}, out.all()[2:])
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Len(t, out.all(), 4, "nothing repeated: nothing more")
	})
}

func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
