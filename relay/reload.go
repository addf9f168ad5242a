package relay

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"time"
)

// DefaultReloadInterval is how often the agents and policy files are
// checked for changes.
const DefaultReloadInterval = 2 * time.Second

// watchFile re-reads path every interval until ctx ends and, when its
// contents differ from last, calls apply with them; apply puts them in
// force and says how many clusters they name. A file that cannot be read
// or applied is logged and what is in force stays.
func watchFile(ctx context.Context, path string, last []byte, interval time.Duration, log *slog.Logger, what string, apply func([]byte) (int, error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			log.Warn("cannot read the "+what+"; keeping the one in force", "file", path, "err", err)
			continue
		}
		if bytes.Equal(b, last) {
			continue
		}
		last = b
		n, err := apply(b)
		if err != nil {
			log.Error(what+" not applied; keeping the one in force", "err", err)
			continue
		}
		log.Info(what+" applied", "file", path, "clusters", n)
	}
}
