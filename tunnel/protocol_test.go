package tunnel_test

import (
	"bufio"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/tunnel"
)

const goodHandshake = "GET /tunnel/v1/connect HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: clusterconnect-tunnel.v1\r\n" +
	"Clusterconnect-Cluster-Id: prod-eu.1\r\nClusterconnect-Agent-Id: agent-7\r\nAuthorization: Bearer c2VjcmV0\r\n\r\n"

func readRequest(t testing.TB, raw string) (*http.Request, error) {
	return http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
}

func TestParseHandshake(t *testing.T) {
	r, err := readRequest(t, goodHandshake)
	require.NoError(t, err)
	hs, err := tunnel.ParseHandshake(r)
	require.NoError(t, err)
	assert.Equal(t, tunnel.Handshake{ClusterID: "prod-eu.1", AgentID: "agent-7", Credential: "c2VjcmV0"}, hs)

	for _, tc := range []struct{ name, from, to, want string }{
		{"POST", "GET ", "POST ", "method"},
		{"no upgrade", "Connection: Upgrade", "Connection: keep-alive", "Connection: Upgrade"},
		{"other version", "clusterconnect-tunnel.v1", "clusterconnect-tunnel.v9", "speaks clusterconnect-tunnel.v1"},
		{"no cluster", "Clusterconnect-Cluster-Id: prod-eu.1\r\n", "", "exactly one"},
		{"two clusters", "Clusterconnect-Cluster-Id: prod-eu.1\r\n", "Clusterconnect-Cluster-Id: a\r\nClusterconnect-Cluster-Id: b\r\n", "exactly one"},
		{"bad cluster", "prod-eu.1", "../etc", "cluster ID"},
		{"basic auth", "Bearer c2VjcmV0", "Basic c2VjcmV0", "bearer"},
		{"empty bearer", "Bearer c2VjcmV0", "Bearer ", "bearer"},
		{"no auth", "Authorization: Bearer c2VjcmV0\r\n", "", "Authorization"},
		{"huge credential", "c2VjcmV0", strings.Repeat("a", 9000), "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := readRequest(t, strings.Replace(goodHandshake, tc.from, tc.to, 1))
			require.NoError(t, err)
			_, err = tunnel.ParseHandshake(r)
			require.ErrorIs(t, err, tunnel.ErrBadHandshake)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "c2VjcmV0", "errors never carry the credential")
		})
	}
}

func TestValidateClusterID(t *testing.T) {
	for id, ok := range map[string]bool{
		"a": true, "prod-eu-1": true, "Prod_EU.1": true, strings.Repeat("a", 253): true,
		"": false, strings.Repeat("a", 254): false, "-a": false, "a-": false, "a/b": false,
		"a b": false, "..": false, "a\x00": false, "ä": false,
	} {
		assert.Equal(t, ok, tunnel.ValidateClusterID(id) == nil, "%q", id)
	}
}

// FuzzParseHandshake feeds arbitrary requests to the relay's handshake
// parser: it must never panic, and what it accepts must be well-formed.
func FuzzParseHandshake(f *testing.F) {
	f.Add(goodHandshake)
	f.Add(strings.Replace(goodHandshake, "prod-eu.1", "a", 1))
	f.Add("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		r, err := readRequest(t, raw)
		if err != nil {
			return
		}
		hs, err := tunnel.ParseHandshake(r)
		if err != nil {
			if !errors.Is(err, tunnel.ErrBadHandshake) {
				t.Fatalf("error %v does not wrap ErrBadHandshake", err)
			}
			return
		}
		if tunnel.ValidateClusterID(hs.ClusterID) != nil || hs.Credential == "" || len(hs.Credential) > 8<<10 {
			t.Fatalf("accepted a malformed handshake: %+v", hs)
		}
		for _, c := range hs.AgentID {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("agent ID %q has unprintable characters", hs.AgentID)
			}
		}
	})
}
