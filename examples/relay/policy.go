package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/internal/cli"
)

// limitFlags are the policy-wide limits; the policy file's "limits" take
// precedence field by field.
type limitFlags struct {
	callerStreams, clusterStreams *int
	callerRate, clusterRate       *float64
}

func registerLimits(fs *flag.FlagSet) *limitFlags {
	return &limitFlags{
		callerStreams:  fs.Int("caller-streams", access.DefaultCallerStreams, "concurrent requests one caller may have open to one cluster (watches, exec and port-forward each hold one)"),
		callerRate:     fs.Float64("caller-rate", access.DefaultCallerRate, "requests per second one caller may send to one cluster (bursts of twice as many)"),
		clusterStreams: fs.Int("cluster-streams", access.DefaultClusterStreams, "concurrent requests all callers together may have open to one cluster"),
		clusterRate:    fs.Float64("cluster-rate", access.DefaultClusterRate, "requests per second all callers together may send to one cluster (bursts of twice as many)"),
	}
}

// loadPolicy reads the policy file and fills the limits it leaves out
// from the flags.
func loadPolicy(path string, lf *limitFlags) (*access.Policy, []byte, error) {
	b, err := cli.ReadFileFlag("access-policy", path)
	if err != nil {
		return nil, nil, err
	}
	p, err := access.ParsePolicy(b)
	if err != nil {
		return nil, b, fmt.Errorf("-access-policy %s: %w", path, err)
	}
	p.Limits = p.Limits.Or(access.Limits{
		CallerStreams: *lf.callerStreams, CallerRate: *lf.callerRate, CallerBurst: int(2**lf.callerRate + 0.5),
		ClusterStreams: *lf.clusterStreams, ClusterRate: *lf.clusterRate, ClusterBurst: int(2**lf.clusterRate + 0.5),
	})
	if err := p.Validate(); err != nil {
		return nil, b, fmt.Errorf("-access-policy %s: %w", path, err)
	}
	return p, b, nil
}

// watchFile re-reads a file every interval until ctx ends and, when its
// contents changed, calls apply, which reads and applies it and says how
// many clusters it names. A file that cannot be read or applied is logged
// and what is in force stays.
func watchFile(ctx context.Context, path string, last []byte, interval time.Duration, log *slog.Logger, what string, apply func() (int, error)) {
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
		n, err := apply()
		if err != nil {
			log.Error(what+" not applied; keeping the one in force", "err", err)
			continue
		}
		log.Info(what+" applied", "file", path, "clusters", n)
	}
}
