package etcddir

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clusterconnect/clusterconnect/internal/logx"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// Defaults of Config.
const (
	DefaultPrefix = "/clusterconnect/directory/"
	// DefaultTTL is the lease's time to live: how long a replica that
	// died stays in the others' views.
	DefaultTTL = 5 * time.Second
)

// maxTxnOps is etcd's default bound on operations in one transaction.
const maxTxnOps = 128

// Config configures a Directory.
type Config struct {
	// Client is the etcd client. Required; the Directory does not close
	// it.
	Client *clientv3.Client
	// Prefix is where the fleet's directory lives in etcd; default
	// DefaultPrefix. Replicas of one fleet share it.
	Prefix string
	// ReplicaID names this replica, unique in the fleet. Required.
	ReplicaID string
	// PeerAddr is the host:port other replicas reach this one's peer
	// listener on. Required.
	PeerAddr string
	// TTL is the lease's time to live; default DefaultTTL. Whole seconds.
	TTL time.Duration
	// Logger receives lease and watch events; nil discards them.
	Logger *slog.Logger
}

// Directory is a tunnel.Directory kept in etcd. Run it for as long as the
// relay serves.
type Directory struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	want    map[string]bool              // clusters this replica holds
	view    map[string]map[string]string // cluster → replica ID → peer address, every replica's
	members map[string]string            // replica ID → peer address, every live replica
}

var (
	_ tunnel.Directory      = (*Directory)(nil)
	_ tunnel.ReplicaCounter = (*Directory)(nil)
	_ tunnel.ReplayCache    = (*Directory)(nil)
)

// New returns a Directory for cfg; nothing is written before Run.
func New(cfg *Config) (*Directory, error) {
	if cfg == nil || cfg.Client == nil || cfg.ReplicaID == "" || cfg.PeerAddr == "" {
		return nil, errors.New("etcddir: Client, ReplicaID and PeerAddr are required")
	}
	if strings.Contains(cfg.ReplicaID, "/") {
		return nil, fmt.Errorf("etcddir: replica ID %q may not contain '/'", cfg.ReplicaID)
	}
	c := *cfg
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	if c.TTL < time.Second {
		return nil, errors.New("etcddir: TTL must be at least a second")
	}
	return &Directory{cfg: c, log: logx.OrDiscard(c.Logger), kick: make(chan struct{}, 1),
		want: map[string]bool{}, view: map[string]map[string]string{}, members: map[string]string{}}, nil
}

// Hold implements tunnel.Directory: the change is written in the
// background.
func (d *Directory) Hold(clusterID string, held bool) {
	d.mu.Lock()
	if held {
		d.want[clusterID] = true
	} else {
		delete(d.want, clusterID)
	}
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Holders implements tunnel.Directory, from the latest view.
func (d *Directory) Holders(clusterID string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for id, addr := range d.view[clusterID] {
		if id != d.cfg.ReplicaID {
			out = append(out, addr)
		}
	}
	return out
}

// Replicas implements tunnel.ReplicaCounter: the live replicas in the
// view, this one included (at least 1).
func (d *Directory) Replicas() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.members)
	if _, ok := d.members[d.cfg.ReplicaID]; !ok {
		n++
	}
	return n
}

// Clusters reports how many clusters the view knows, and how many
// (cluster, replica) entries it holds.
func (d *Directory) Clusters() (clusters, entries int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, hs := range d.view {
		entries += len(hs)
	}
	return len(d.view), entries
}

// Run keeps this replica in the directory until ctx ends: it holds a
// lease, writes a key on it for each cluster held, and watches every
// replica's keys into the view. When etcd cannot be reached the view stays
// as it was and the relay goes on with it; when the lease has expired
// meanwhile, a new one is taken and every key written again. When ctx
// ends, the lease is revoked, so the other replicas stop sending this one
// requests at once (a drain), and Run returns nil.
func (d *Directory) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		err := d.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		d.log.Warn("etcd directory session ended; starting another", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff + rand.N(backoff)):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// session is one lease: publish, watch, and keep both current until the
// lease is lost or ctx ends.
func (d *Directory) session(ctx context.Context) error {
	cli := d.cfg.Client
	lease, err := cli.Grant(ctx, int64(d.cfg.TTL/time.Second))
	if err != nil {
		return fmt.Errorf("etcddir: granting a lease: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	alive, err := cli.KeepAlive(sctx, lease.ID)
	if err != nil {
		return fmt.Errorf("etcddir: keeping the lease alive: %w", err)
	}
	defer func() {
		if ctx.Err() != nil {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			cli.Revoke(rctx, lease.ID)
			rcancel()
		}
	}()
	if _, err := cli.Put(sctx, d.memberKey(d.cfg.ReplicaID), d.cfg.PeerAddr, clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("etcddir: joining the fleet: %w", err)
	}
	published := map[string]bool{}
	rev, err := d.relist(sctx)
	if err != nil {
		return err
	}
	watch := cli.Watch(clientv3.WithRequireLeader(sctx), d.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	d.log.Info("etcd directory session started", "lease", fmt.Sprintf("%x", lease.ID), "replica", d.cfg.ReplicaID)
	d.kickSelf()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-alive:
			if !ok {
				return errors.New("etcddir: the lease expired or could not be kept alive")
			}
		case <-d.kick:
			if err := d.publish(sctx, lease.ID, published); err != nil {
				d.log.Warn("etcd directory write failed; retrying", "err", err)
				time.AfterFunc(time.Second, d.kickSelf)
			}
		case wr, ok := <-watch:
			if !ok || wr.Canceled || wr.Err() != nil {
				// Compacted past us, or the watch broke: list again
				// and watch on from there.
				if rev, err = d.relist(sctx); err != nil {
					return err
				}
				watch = cli.Watch(clientv3.WithRequireLeader(sctx), d.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
				continue
			}
			d.apply(wr.Events)
		}
	}
}

func (d *Directory) kickSelf() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Keys: <prefix>clusters/<cluster>/<replica> for what a replica holds,
// <prefix>replicas/<replica> for the replica itself; both carry its peer
// address and live on its lease.
const (
	clustersDir = "clusters/"
	replicasDir = "replicas/"
	replaysDir  = "replays/" // agent assertions' IDs, each until it expires
	endedDir    = "ended/"   // sessions the front door ended, and why, for a while
)

// key is where this replica's entry for cluster lives.
func (d *Directory) key(cluster string) string {
	return d.cfg.Prefix + clustersDir + cluster + "/" + d.cfg.ReplicaID
}

func (d *Directory) memberKey(replica string) string {
	return d.cfg.Prefix + replicasDir + replica
}

// publish writes what this replica holds and deletes what it no longer
// does, in transactions of at most maxTxnOps operations.
func (d *Directory) publish(ctx context.Context, lease clientv3.LeaseID, published map[string]bool) error {
	d.mu.Lock()
	want := maps.Clone(d.want)
	d.mu.Unlock()
	var ops []clientv3.Op
	var puts, dels []string
	for c := range want {
		if !published[c] {
			ops = append(ops, clientv3.OpPut(d.key(c), d.cfg.PeerAddr, clientv3.WithLease(lease)))
			puts = append(puts, c)
		}
	}
	for c := range published {
		if !want[c] {
			ops = append(ops, clientv3.OpDelete(d.key(c)))
			dels = append(dels, c)
		}
	}
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		if _, err := d.cfg.Client.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			return err
		}
		ops = ops[n:]
	}
	for _, c := range puts {
		published[c] = true
	}
	for _, c := range dels {
		delete(published, c)
	}
	return nil
}

// relist reads every replica's entries into a fresh view and returns the
// revision they were read at.
func (d *Directory) relist(ctx context.Context) (int64, error) {
	resp, err := d.cfg.Client.Get(ctx, d.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcddir: listing the directory: %w", err)
	}
	view, members := map[string]map[string]string{}, map[string]string{}
	for _, kv := range resp.Kvs {
		if id, ok := d.member(string(kv.Key)); ok {
			members[id] = string(kv.Value)
		} else if c, id, ok := d.split(string(kv.Key)); ok {
			if view[c] == nil {
				view[c] = map[string]string{}
			}
			view[c][id] = string(kv.Value)
		}
	}
	d.mu.Lock()
	d.view, d.members = view, members
	d.mu.Unlock()
	return resp.Header.Revision, nil
}

func (d *Directory) apply(events []*clientv3.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ev := range events {
		if id, ok := d.member(string(ev.Kv.Key)); ok {
			if ev.Type == clientv3.EventTypePut {
				d.members[id] = string(ev.Kv.Value)
			} else {
				delete(d.members, id)
			}
			continue
		}
		c, id, ok := d.split(string(ev.Kv.Key))
		if !ok {
			continue
		}
		switch ev.Type {
		case clientv3.EventTypePut:
			if d.view[c] == nil {
				d.view[c] = map[string]string{}
			}
			d.view[c][id] = string(ev.Kv.Value)
		case clientv3.EventTypeDelete:
			delete(d.view[c], id)
			if len(d.view[c]) == 0 {
				delete(d.view, c)
			}
		}
	}
}

// member parses <prefix>replicas/<replica>.
func (d *Directory) member(key string) (replica string, ok bool) {
	return strings.CutPrefix(key, d.cfg.Prefix+replicasDir)
}

// split parses <prefix>clusters/<cluster>/<replica>.
func (d *Directory) split(key string) (cluster, replica string, ok bool) {
	rest, ok := strings.CutPrefix(key, d.cfg.Prefix+clustersDir)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// Claim implements tunnel.ReplayCache: key is created under
// <prefix>replays/ if absent, on a lease of its own that ends at until, in
// one transaction, so of two replicas claiming one key exactly one wins.
func (d *Directory) Claim(ctx context.Context, key string, until time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ttl := int64(time.Until(until)/time.Second) + 1
	lease, err := d.cfg.Client.Grant(ctx, max(ttl, 1))
	if err != nil {
		return false, fmt.Errorf("etcddir: replay cache: %w", err)
	}
	k := d.cfg.Prefix + replaysDir + key
	resp, err := d.cfg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, d.cfg.ReplicaID, clientv3.WithLease(lease.ID))).
		Commit()
	if err != nil || !resp.Succeeded {
		d.cfg.Client.Revoke(context.WithoutCancel(ctx), lease.ID)
	}
	if err != nil {
		return false, fmt.Errorf("etcddir: replay cache: %w", err)
	}
	return resp.Succeeded, nil
}

// NoteEnded implements access.EndedSessions: why is kept under
// <prefix>ended/<id>, on a lease of its own that ends at until, for every
// replica to read.
func (d *Directory) NoteEnded(ctx context.Context, id string, why []byte, until time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lease, err := d.cfg.Client.Grant(ctx, max(int64(time.Until(until)/time.Second)+1, 1))
	if err != nil {
		return fmt.Errorf("etcddir: ended sessions: %w", err)
	}
	if _, err := d.cfg.Client.Put(ctx, d.cfg.Prefix+endedDir+id, string(why), clientv3.WithLease(lease.ID)); err != nil {
		d.cfg.Client.Revoke(context.WithoutCancel(ctx), lease.ID)
		return fmt.Errorf("etcddir: ended sessions: %w", err)
	}
	return nil
}

// Ended implements access.EndedSessions.
func (d *Directory) Ended(ctx context.Context, id string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := d.cfg.Client.Get(ctx, d.cfg.Prefix+endedDir+id)
	if err != nil {
		return nil, fmt.Errorf("etcddir: ended sessions: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}
