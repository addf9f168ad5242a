package e2e

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

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
		// Ended by one side or the other (kubectl closing, or the agent
		// once cat exited: whichever the relay heard first), never lost.
		ended := regexp.MustCompile(`msg="session ended" id=` + id + ` .*class=exec end=(\S+)`)
		var end []string
		require.Eventually(t, func() bool { end = ended.FindStringSubmatch(c.logs("relay")); return end != nil }, 10*time.Second, 50*time.Millisecond)
		assert.Contains(t, []string{"client", "upstream"}, end[1])
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

// otlpReceiver is an OTLP/HTTP trace receiver: what an OpenTelemetry
// collector is to the binaries, decoding what they send.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []receivedSpan
}

type receivedSpan struct {
	service, name         string
	traceID, id, parentID string
	attrs                 map[string]string
	links                 []string // span IDs linked
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var msg coltracepb.ExportTraceServiceRequest
		if err != nil || req.URL.Path != "/v1/traces" || proto.Unmarshal(body, &msg) != nil {
			http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range msg.ResourceSpans {
			service := ""
			for _, a := range rs.Resource.GetAttributes() {
				if a.Key == "service.name" {
					service = a.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					rec := receivedSpan{service: service, name: s.Name, traceID: hex.EncodeToString(s.TraceId),
						id: hex.EncodeToString(s.SpanId), parentID: hex.EncodeToString(s.ParentSpanId), attrs: map[string]string{}}
					for _, a := range s.Attributes {
						rec.attrs[a.Key] = a.Value.GetStringValue()
					}
					for _, l := range s.Links {
						rec.links = append(rec.links, hex.EncodeToString(l.SpanId))
					}
					r.spans = append(r.spans, rec)
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// find returns the span of service named name whose attribute key is
// value.
func (r *otlpReceiver) find(service, name, key, value string) (receivedSpan, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.service == service && s.name == name && (key == "" || s.attrs[key] == value) {
			return s, true
		}
	}
	return receivedSpan{}, false
}

// child returns the span of service named name whose parent is parent.
func (r *otlpReceiver) child(service, name, parent string) (receivedSpan, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.service == service && s.name == name && s.parentID == parent {
			return s, true
		}
	}
	return receivedSpan{}, false
}

// Spans from the client proxy, the relay and the agent, each sent by its
// own process to an OTLP receiver, make one trace: the relay's hop under
// the client proxy's (the relay trusts its clients' IDs here), its front
// door check and its tunnel under its hop, the agent's hop under the
// tunnel, and the agent's token check and its request to kube-apiserver
// under the agent's hop.
func TestSpansOfOneRequestShareOneTrace(t *testing.T) {
	otlp := startOTLPReceiver(t)
	endpoint := []string{"-otlp-endpoint", otlp.srv.URL}
	c := newChain(t, withFlags(append([]string{"-trust-client-ids"}, endpoint...), endpoint, endpoint))
	res, err := c.kubectl().Run(ctx(t), nil, "get", "pods", "-n", ns, "-v=8")
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	ids := auditIDHeader.FindAllStringSubmatch(res.Stderr, -1)
	require.NotEmpty(t, ids)
	id := ids[len(ids)-1][1]

	var proxy, relayHop, tunnelHop, agentHop receivedSpan
	var ok bool
	require.Eventually(t, func() bool {
		if proxy, ok = otlp.find("clusterconnect-proxy", "proxy GET", "clusterconnect.request_id", id); !ok {
			return false
		}
		if relayHop, ok = otlp.find("clusterconnect-relay", "relay GET", "clusterconnect.request_id", id); !ok {
			return false
		}
		if tunnelHop, ok = otlp.child("clusterconnect-relay", "tunnel to the agent", relayHop.id); !ok {
			return false
		}
		agentHop, ok = otlp.child("clusterconnect-agent", "agent GET", tunnelHop.id)
		return ok
	}, 30*time.Second, 100*time.Millisecond, "spans received: %+v", otlp.spans)

	assert.Equal(t, proxy.traceID, relayHop.traceID, "one trace")
	assert.Equal(t, proxy.id, relayHop.parentID, "the relay's hop under the client proxy's")
	assert.Equal(t, proxy.traceID, agentHop.traceID)
	assert.Equal(t, id, agentHop.attrs["clusterconnect.request_id"], "the agent's hop names the request's ID")
	_, ok = otlp.child("clusterconnect-relay", "front door", relayHop.id)
	assert.True(t, ok, "the relay's front door check is a span of its hop")
	_, ok = otlp.child("clusterconnect-proxy", "token", proxy.id)
	assert.True(t, ok, "the client proxy's getting the token is a span of its hop")
	for _, name := range []string{"token check", "kube-apiserver"} {
		require.Eventually(t, func() bool { _, ok := otlp.child("clusterconnect-agent", name, agentHop.id); return ok }, 10*time.Second, 100*time.Millisecond,
			"the agent's %q span", name)
	}
}
