package tunnel_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// seenIDs is a handler that answers with the Audit-ID it was sent, and
// keeps each.
type seenIDs struct {
	mu  sync.Mutex
	ids []string
}

func (s *seenIDs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.ids = append(s.ids, strings.Join(r.Header.Values("Audit-Id"), ","))
	s.mu.Unlock()
	if r.Header.Get("Upgrade") != "" {
		upgradeEcho(w, r)
		return
	}
	io.WriteString(w, "ok")
}

func (s *seenIDs) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[len(s.ids)-1]
}

// Each request gets one ID: the relay's answer names it (Audit-Id) and
// the agent's handler gets it as Audit-ID, for kube-apiserver to record
// the request under. An ID a client sends is kept only where the relay
// is told to trust clients with that, and only if it is one an ID may be.
func TestEachRequestHasOneIDAlongTheChain(t *testing.T) {
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trust), func(t *testing.T) {
			seen := &seenIDs{}
			h := newHarness(t, seen, harnessOpts{relayCfg: func(c *tunnel.RelayConfig) { c.TrustClientIDs = trust }})
			get := func(sent ...string) string {
				req, _ := http.NewRequest(http.MethodGet, h.url("/api"), nil)
				for _, id := range sent {
					req.Header.Add("Audit-ID", id)
				}
				resp, err := h.client().Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				got := resp.Header.Get("Audit-Id")
				assert.Equal(t, got, seen.last(), "the agent's handler gets the ID the client is told")
				return got
			}
			a, b := get(), get()
			assert.Regexp(t, uuidV4, a)
			assert.NotEqual(t, a, b, "each request its own")

			chosen := get("alices-choice-1")
			if trust {
				assert.Equal(t, "alices-choice-1", chosen)
			} else {
				assert.Regexp(t, uuidV4, chosen, "an untrusted client does not choose its ID")
			}
			for _, bad := range [][]string{{"with space"}, {strings.Repeat("x", 129)}, {"one", "two"}, {"semi;colon"}} {
				assert.Regexp(t, uuidV4, get(bad...), "%q is no ID", bad)
			}

			_, _, resp := dialUpgrade(t, h, "echo/1")
			require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
			assert.Regexp(t, uuidV4, resp.Header.Get("Audit-Id"))
			assert.Equal(t, resp.Header.Get("Audit-Id"), seen.last(), "an upgrade's 101 names the ID too")
		})
	}
}

// logLines collects a logger's JSON lines.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// find returns the lines with message msg whose id is id.
func (l *logLines) find(msg, id string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg && m["id"] == id {
			out = append(out, m)
		}
	}
	return out
}

// A session gets a line when its answer begins and one when it ends,
// with how long it lasted, the bytes each way and why it ended; the
// metrics count it by class and by why.
func TestSessionsAreLoggedWhenTheyStartAndEnd(t *testing.T) {
	lines := &logLines{}
	reg := prometheus.NewRegistry()
	ends := make(chan func(error), 1)
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Query().Get("watch") == "true":
			w.Header().Set("Content-Type", "application/json;stream=watch")
			fmt.Fprintln(w, `{"type":"ADDED","object":{}}`)
			w.(http.Flusher).Flush()
			if r.URL.Query().Get("end") == "now" {
				return // the API server ends the watch
			}
			<-r.Context().Done()
		case strings.HasSuffix(r.URL.Path, "/exit"):
			// A command that prints and exits at once.
			conn, brw, _ := http.NewResponseController(w).Hijack()
			fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nbye")
			brw.Flush()
			conn.Close()
		default:
			upgradeEcho(w, r)
		}
	}), harnessOpts{relayCfg: func(c *tunnel.RelayConfig) {
		c.Logger = slog.New(slog.NewJSONHandler(lines, nil))
		c.Registerer = reg
		c.ClientAuthorizer = tunnel.ClientAuthorizerFunc(func(r *http.Request, _ string) error {
			tunnel.NoteCaller(r.Context(), "alice-oid")
			if r.URL.Query().Get("end") == "revoke" {
				ends <- tunnel.EndRequest(r.Context())
			}
			return nil
		})
	}})
	ended := func(id string) map[string]any {
		t.Helper()
		var got []map[string]any
		require.Eventually(t, func() bool { got = lines.find("session ended", id); return len(got) == 1 }, 10*time.Second, 5*time.Millisecond)
		require.Len(t, lines.find("session started", id), 1)
		assert.Equal(t, "alice-oid", got[0]["caller"])
		assert.Equal(t, clusterID, got[0]["cluster"])
		return got[0]
	}

	// An exec the cluster ends: its command exited.
	{
		conn, br, resp := dialUpgradePath(t, h, "/api/v1/namespaces/ns/pods/p/exit", "echo/1")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		out, _ := io.ReadAll(br)
		assert.Equal(t, "bye", string(out))
		conn.Close()
		line := ended(resp.Header.Get("Audit-Id"))
		assert.Equal(t, "upstream", line["end"])
		assert.Equal(t, "upgrade", line["class"])
		assert.EqualValues(t, 3, line["bytes_out"])
	}
	// An exec the client ends.
	{
		conn, br, resp := dialUpgrade(t, h, "echo/1")
		require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		io.WriteString(conn, "hello")
		got := make([]byte, 5)
		_, err := io.ReadFull(br, got)
		require.NoError(t, err)
		conn.Close()
		line := ended(resp.Header.Get("Audit-Id"))
		assert.Equal(t, "client", line["end"])
		assert.Equal(t, "exec", line["class"])
		assert.EqualValues(t, 5, line["bytes_in"])
		assert.GreaterOrEqual(t, line["bytes_out"], 5.0, "the echo, and the goodbye the agent's side may still get out")
	}
	// A watch the API server ends, and one the front door ends.
	for _, c := range []struct{ end, why string }{{"now", "upstream"}, {"revoke", "revoked"}} {
		resp, err := h.client().Get(h.url("/api/v1/pods?watch=true&end=" + c.end))
		require.NoError(t, err)
		first, err := bufio.NewReader(resp.Body).ReadString('\n')
		require.NoError(t, err)
		assert.Contains(t, first, "ADDED")
		if c.end == "revoke" {
			(<-ends)(&tunnel.AccessError{Code: http.StatusForbidden, Reason: "revoked", Message: "no longer yours"})
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		line := ended(resp.Header.Get("Audit-Id"))
		assert.Equal(t, c.why, line["end"], c.end)
		assert.Equal(t, "watch", line["class"])
	}
	// An ordinary request is one line, no session.
	resp, err := h.client().Get(h.url("/api/v1/pods"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Eventually(t, func() bool { return len(lines.find("request", resp.Header.Get("Audit-Id"))) == 1 }, 10*time.Second, 5*time.Millisecond)
	assert.Empty(t, lines.find("session started", resp.Header.Get("Audit-Id")))

	assert.Equal(t, 1.0, sessionsEnded(t, reg, "upgrade", "upstream"))
	assert.Equal(t, 1.0, sessionsEnded(t, reg, "exec", "client"))
	assert.Equal(t, 1.0, sessionsEnded(t, reg, "watch", "upstream"))
	assert.Equal(t, 1.0, sessionsEnded(t, reg, "watch", "revoked"))
}

// sessionsEnded reads how many sessions of class ended by why.
func sessionsEnded(t *testing.T, reg *prometheus.Registry, class, why string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "clusterconnect_relay_sessions_ended_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["class"] == class && labels["end"] == why {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
