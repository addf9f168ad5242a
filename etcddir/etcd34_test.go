package etcddir_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// The directory on etcd 3.4, the oldest release it runs on (the client is
// 3.7; the other tests run on the 3.6 Kubernetes 1.37 uses): each of the
// tests above, against 3.4 members, one and three.
func TestOnEtcd34(t *testing.T) {
	bin, err := kubetest.Etcd34Path()
	kubetest.Require(t, err)
	t.Setenv(kubetest.EnvEtcd, bin)
	t.Run("the members are 3.4", func(t *testing.T) {
		e := startEtcd(t, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := client(t, e.Endpoints()).Status(ctx, e.Endpoints()[0])
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(st.Version, "3.4."), "etcd %s", st.Version)
	})
	for name, test := range map[string]func(*testing.T){
		"replicas see who holds what":                  TestReplicasSeeWhoHoldsWhat,
		"a stopped replica leaves, a dead one expires": TestAStoppedReplicaLeavesAndADeadOneExpires,
		"the view outlives an etcd outage and heals":   TestTheViewOutlivesAnEtcdOutageAndHeals,
		"one etcd member of three lost":                TestOneEtcdMemberOfThreeLost,
		"the replay cache is shared":                   TestReplayCacheIsShared,
		"ended sessions are shared":                    TestEndedSessionsAreShared,
	} {
		t.Run(name, test)
	}
}
