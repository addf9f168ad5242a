package etcddir_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clusterconnect/clusterconnect/etcddir"
	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

func startEtcd(t *testing.T, members int) *kubetest.Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := kubetest.StartEtcd(ctx, t.TempDir(), members)
	kubetest.Require(t, err)
	t.Cleanup(e.Stop)
	return e
}

func client(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// replica is one Directory running until the test ends or stop is called.
type replica struct {
	*etcddir.Directory
	stop func()
	done chan struct{}
}

func run(t *testing.T, cli *clientv3.Client, id, addr string) *replica {
	t.Helper()
	d, err := etcddir.New(&etcddir.Config{Client: cli, ReplicaID: id, PeerAddr: addr, TTL: 2 * time.Second, Prefix: "/test/" + t.Name() + "/"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{Directory: d, stop: cancel, done: make(chan struct{})}
	go func() { defer close(r.done); d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func holders(d *replica, cluster string) func() []string {
	return func() []string { return d.Holders(cluster) }
}

func eventually(t *testing.T, want []string, got func() []string, msg string) {
	t.Helper()
	require.Eventually(t, func() bool { return assert.ObjectsAreEqual(want, got()) || (len(want) == 0 && len(got()) == 0) },
		30*time.Second, 20*time.Millisecond, "%s: last %v", msg, got())
}

func TestReplicasSeeWhoHoldsWhat(t *testing.T) {
	e := startEtcd(t, 1)
	a := run(t, client(t, e.Endpoints()), "a", "10.0.0.1:8444")
	b := run(t, client(t, e.Endpoints()), "b", "10.0.0.2:8444")

	a.Hold("prod", true)
	eventually(t, []string{"10.0.0.1:8444"}, holders(b, "prod"), "b sees a holding prod")
	assert.Empty(t, a.Holders("prod"), "a does not forward to itself")

	b.Hold("prod", true)
	eventually(t, []string{"10.0.0.2:8444"}, holders(a, "prod"), "a sees b")
	a.Hold("prod", false)
	eventually(t, nil, holders(b, "prod"), "a's entry is withdrawn")
	clusters, entries := b.Clusters()
	assert.Equal(t, 1, clusters)
	assert.Equal(t, 1, entries)
	assert.Equal(t, 2, a.Replicas(), "both replicas are members, holding or not")
}

// A replica that stops revokes its lease: the others forget it at once,
// not a TTL later. One that dies is forgotten when its lease expires.
func TestAStoppedReplicaLeavesAndADeadOneExpires(t *testing.T) {
	e := startEtcd(t, 1)
	a := run(t, client(t, e.Endpoints()), "a", "10.0.0.1:8444")
	deadCli := client(t, e.Endpoints())
	dead := run(t, deadCli, "dead", "10.0.0.3:8444")
	b := run(t, client(t, e.Endpoints()), "b", "10.0.0.2:8444")
	a.Hold("c1", true)
	dead.Hold("c2", true)
	eventually(t, []string{"10.0.0.1:8444"}, holders(b, "c1"), "b sees a")
	eventually(t, []string{"10.0.0.3:8444"}, holders(b, "c2"), "b sees the other")

	a.stop()
	<-a.done
	check := client(t, e.Endpoints())
	resp, err := check.Get(context.Background(), "/test/"+t.Name()+"/clusters/c1/", clientv3.WithPrefix())
	require.NoError(t, err)
	assert.Zero(t, resp.Count, "a revoked its lease before Run returned: its keys are gone, not waiting for the TTL")
	eventually(t, nil, holders(b, "c1"), "b's view follows")

	deadCli.Close() // no revoke, no keep-alive: as if the process died
	eventually(t, nil, holders(b, "c2"), "the dead replica's keys expired with its lease")
}

// With etcd gone, a replica answers from its last view; when etcd comes
// back, the keys whose lease expired meanwhile are written again.
func TestTheViewOutlivesAnEtcdOutageAndHeals(t *testing.T) {
	e := startEtcd(t, 1)
	a := run(t, client(t, e.Endpoints()), "a", "10.0.0.1:8444")
	b := run(t, client(t, e.Endpoints()), "b", "10.0.0.2:8444")
	a.Hold("prod", true)
	eventually(t, []string{"10.0.0.1:8444"}, holders(b, "prod"), "b sees a")

	e.Kill(0)
	time.Sleep(4 * time.Second) // past the 2 s TTL: the lease will be found expired
	assert.Equal(t, []string{"10.0.0.1:8444"}, b.Holders("prod"), "b still forwards with what it knew")
	a.Hold("staging", true) // a change while etcd is away

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, e.Restart(ctx, 0))
	eventually(t, []string{"10.0.0.1:8444"}, holders(b, "prod"), "a wrote prod again on a new lease")
	eventually(t, []string{"10.0.0.1:8444"}, holders(b, "staging"), "and what changed meanwhile")
}

// One member of three lost: nothing changes for the replicas.
func TestOneEtcdMemberOfThreeLost(t *testing.T) {
	e := startEtcd(t, 3)
	a := run(t, client(t, e.Endpoints()), "a", "10.0.0.1:8444")
	b := run(t, client(t, e.Endpoints()), "b", "10.0.0.2:8444")
	a.Hold("c1", true)
	eventually(t, []string{"10.0.0.1:8444"}, holders(b, "c1"), "b sees a")
	e.Kill(0)
	a.Hold("c2", true)
	eventually(t, []string{"10.0.0.1:8444"}, holders(b, "c2"), "writes and watches go on with two members")
	time.Sleep(3 * time.Second) // past the TTL: the lease is kept alive by the others
	assert.Equal(t, []string{"10.0.0.1:8444"}, b.Holders("c1"))
}

// An assertion ID claimed at one replica is refused at every other, and
// of many replicas claiming it at once exactly one wins.
func TestReplayCacheIsShared(t *testing.T) {
	e := startEtcd(t, 1)
	var reps []*replica
	for i := range 4 {
		reps = append(reps, run(t, client(t, e.Endpoints()), fmt.Sprintf("r%d", i), fmt.Sprintf("10.0.0.%d:8444", i)))
	}
	until := time.Now().Add(time.Minute)
	results := make(chan bool, len(reps))
	for _, r := range reps {
		go func() {
			ok, err := r.Claim(context.Background(), "c1/jti-1", until)
			assert.NoError(t, err)
			results <- ok
		}()
	}
	won := 0
	for range reps {
		if <-results {
			won++
		}
	}
	assert.Equal(t, 1, won, "exactly one replica accepts the assertion")
	ok, err := reps[0].Claim(context.Background(), "c1/jti-2", until)
	require.NoError(t, err)
	assert.True(t, ok, "another ID is new")

	// The entry lives only as long as the assertion could pass.
	short := time.Now().Add(time.Second)
	ok, err = reps[1].Claim(context.Background(), "c1/jti-3", short)
	require.NoError(t, err)
	require.True(t, ok)
	require.Eventually(t, func() bool {
		ok, err := reps[2].Claim(context.Background(), "c1/jti-3", time.Now().Add(time.Second))
		return err == nil && ok
	}, 30*time.Second, 200*time.Millisecond, "the key expired with its lease")
}

// A session one replica ended is known at every other, for as long as
// it was noted for.
func TestEndedSessionsAreShared(t *testing.T) {
	e := startEtcd(t, 1)
	a := run(t, client(t, e.Endpoints()), "r0", "10.0.0.1:8444")
	b := run(t, client(t, e.Endpoints()), "r1", "10.0.0.2:8444")
	ctx := context.Background()
	require.NoError(t, a.NoteEnded(ctx, "id-1", []byte(`{"Reason":"expired"}`), time.Now().Add(time.Minute)))
	why, err := b.Ended(ctx, "id-1")
	require.NoError(t, err)
	assert.Equal(t, `{"Reason":"expired"}`, string(why))
	why, err = b.Ended(ctx, "id-2")
	require.NoError(t, err)
	assert.Nil(t, why, "nothing for a session nobody ended")

	require.NoError(t, a.NoteEnded(ctx, "id-3", []byte("x"), time.Now().Add(time.Second)))
	require.Eventually(t, func() bool {
		why, err := b.Ended(ctx, "id-3")
		return err == nil && why == nil
	}, 30*time.Second, 200*time.Millisecond, "the entry expired with its lease")
}
