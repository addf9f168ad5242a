package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// auditIDHeader is how kubectl -v=8 prints the Audit-Id of an answer.
var auditIDHeader = regexp.MustCompile(`Audit-Id: ([0-9a-f-]{36})`)

// The ID kubectl's request got is the one in the relay's line, the
// agent's line and kube-apiserver's audit event for that request: in
// proxy mode, in direct mode, and for an exec, whose ID the relay gave
// the session's first carrier.
func TestOneIDFromKubectlToTheAuditLog(t *testing.T) {
	c := newChain(t)
	c.kubectl().MustRun(t, ctx(t), nil, "create", "configmap", "id-probe", "-n", ns)
	direct := &kubetest.Kubectl{Kubeconfig: c.dir + "/direct-kubeconfig"}
	for _, mode := range []struct {
		name string
		k    *kubetest.Kubectl
	}{{"proxy", c.kubectl()}, {"direct", direct}} {
		t.Run(mode.name, func(t *testing.T) {
			res, err := mode.k.Run(ctx(t), nil, "get", "configmap", "id-probe", "-n", ns, "-v=8")
			require.NoError(t, err)
			require.Equal(t, 0, res.ExitCode, res.Stderr)
			// The last answer kubectl names is the GET's.
			ids := auditIDHeader.FindAllStringSubmatch(res.Stderr, -1)
			require.NotEmpty(t, ids, "kubectl -v=8 shows no Audit-Id: %s", res.Stderr)
			id := ids[len(ids)-1][1]

			ev := c.auditEvent(t, id)
			assert.Equal(t, "get", ev.Verb)
			assert.Equal(t, "/api/v1/namespaces/"+ns+"/configmaps/id-probe", ev.RequestURI)
			assert.Equal(t, aliceUPN, ev.ImpersonatedUser.Username, "the event is Alice's request")
			assert.Regexp(t, `msg=request id=`+id+` .*path=/clusters/`+cluster+`/api/v1/namespaces/`+ns+`/configmaps/id-probe status=200`, c.logs("relay"))
			assert.Regexp(t, `msg=request id=`+id+` method=GET path=/api/v1/namespaces/`+ns+`/configmaps/id-probe status=200`, c.logs("agent"))
		})
	}

	t.Run("exec through the client proxy", func(t *testing.T) {
		in := "traced\n"
		out := c.kubectl().MustRun(t, ctx(t), strings.NewReader(in), "exec", "-i", "-n", ns, "web", "--", "cat")
		assert.Equal(t, in, out)
		// The relay's record of the session: the first carrier's ID.
		started := regexp.MustCompile(`msg="session started" id=([0-9a-f-]{36}) .*class=exec path=/clusters/` + cluster + `/api/v1/namespaces/` + ns + `/pods/web/exec`)
		var id string
		require.Eventually(t, func() bool {
			m := started.FindAllStringSubmatch(c.logs("relay"), -1)
			if len(m) > 0 {
				id = m[len(m)-1][1]
			}
			return id != ""
		}, 10*time.Second, 50*time.Millisecond)
		ev := c.auditEvent(t, id)
		assert.Equal(t, "exec", ev.ObjectRef.Subresource) // verb get: kubectl execs over WebSocket
		assert.Equal(t, aliceUPN, ev.ImpersonatedUser.Username)
		assert.Regexp(t, `msg=request id=`+id+` method=GET path=/api/v1/namespaces/`+ns+`/pods/web/exec`, c.logs("agent"))
		assert.Regexp(t, `msg="session ended" id=`+id+` .*class=exec end=client`, c.logs("relay"))
		assert.Regexp(t, `msg="session started" id=`+id+` class=exec`, c.logs("proxy"), "the client proxy's line names the same ID")
	})
}

// auditEvent is what kube-apiserver's audit log says of the request
// with this ID, once it has said it (ResponseComplete).
type auditEvent struct {
	AuditID          string `json:"auditID"`
	Stage            string `json:"stage"`
	Verb             string `json:"verb"`
	RequestURI       string `json:"requestURI"`
	ImpersonatedUser struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef struct {
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
}

func (c *chain) auditEvent(t *testing.T, id string) auditEvent {
	t.Helper()
	var found auditEvent
	require.Eventually(t, func() bool {
		f, err := os.Open(c.env.AuditLog)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if !strings.Contains(sc.Text(), id) {
				continue
			}
			var ev auditEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.AuditID == id && ev.Stage == "ResponseComplete" {
				found = ev
				return true
			}
		}
		return false
	}, 15*time.Second, 100*time.Millisecond, "no audit event with ID %s", id)
	return found
}
