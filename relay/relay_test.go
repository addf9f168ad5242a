package relay_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/relay"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// What is wrong with a config is said by New, before anything listens.
func TestNewRefusesIncompleteConfigs(t *testing.T) {
	cert, _ := demoCertificate()
	serving := &tls.Config{Certificates: []tls.Certificate{cert}}
	agents := tunnel.SecretAuthenticator{"c": "s"}
	dir := t.TempDir()
	keyed := filepath.Join(dir, "keyed.json")
	require.NoError(t, os.WriteFile(keyed, []byte(`{"clusters":{"edge":{"publicKeys":[`+quotedPublicKey(t)+`]}}}`), 0o600))
	for _, tt := range []struct {
		name string
		cfg  relay.Config
		want string
	}{
		{"no certificate", relay.Config{Agents: agents, InsecureSkipClientAuth: true}, "a serving certificate is required"},
		{"no agents", relay.Config{TLSConfig: serving, InsecureSkipClientAuth: true}, "an agents file is required"},
		{"two kinds of agents", relay.Config{TLSConfig: serving, Agents: agents, AgentsFile: "x", InsecureSkipClientAuth: true}, "not both"},
		{"no front door", relay.Config{TLSConfig: serving, Agents: agents}, "exactly one of"},
		{"two front doors", relay.Config{TLSConfig: serving, Agents: agents, PolicyFile: "p", InsecureSkipClientAuth: true}, "exactly one of"},
		{"a policy without a verifier", relay.Config{TLSConfig: serving, Agents: agents, PolicyFile: "p"}, "needs a token verifier"},
		{"headers over what agents take", relay.Config{TLSConfig: serving, Agents: agents, InsecureSkipClientAuth: true, MaxHeaderBytes: 2 << 20}, "MaxHeaderBytes"},
		{"a missing agents file", relay.Config{TLSConfig: serving, AgentsFile: filepath.Join(dir, "none"), InsecureSkipClientAuth: true}, "no such file"},
		{"keys without a public URL", relay.Config{TLSConfig: serving, AgentsFile: keyed, InsecureSkipClientAuth: true}, "public URL is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			c.Listen = "127.0.0.1:0"
			_, err := relay.New(&c)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// Keys without a public URL wrap ErrNoPublicURL, for binaries to say so
// in their words.
func TestNoPublicURLIsASentinel(t *testing.T) {
	a, err := relay.NewAgents(relay.AgentsConfig{})
	require.NoError(t, err)
	l, err := relay.ParseAgentList([]byte(`{"clusters":{"edge":{"publicKeys":[` + quotedPublicKey(t) + `]}}}`))
	require.NoError(t, err)
	assert.True(t, errors.Is(a.Set(l), relay.ErrNoPublicURL))
}

// A list that cannot be put in force changes nothing: the clusters of the
// last good one still connect, and a rotated secret replaces the old.
func TestAgentsKeepTheLastGoodList(t *testing.T) {
	ctx := context.Background()
	a, err := relay.NewAgents(relay.AgentsConfig{PublicURL: "https://relay.example.com"})
	require.NoError(t, err)
	require.Error(t, a.Authenticate(ctx, "c1", "s1"), "nobody before a list")
	require.NoError(t, a.Set(&relay.AgentList{Clusters: map[string]relay.AgentEntry{"c1": {Secret: "s1"}}}))
	require.NoError(t, a.Authenticate(ctx, "c1", "s1"))

	for _, bad := range []*relay.AgentList{
		{},
		{Clusters: map[string]relay.AgentEntry{"c1": {Secret: "s2", PublicKeys: []string{"x"}}}},
		{Clusters: map[string]relay.AgentEntry{"c1": {PublicKeys: []string{"not PEM"}}}},
		{Clusters: map[string]relay.AgentEntry{"bad/id": {Secret: "s2"}}},
	} {
		require.Error(t, a.Set(bad))
		require.NoError(t, a.Authenticate(ctx, "c1", "s1"), "the last good list stays after %+v", bad)
	}
	require.NoError(t, a.Set(&relay.AgentList{Clusters: map[string]relay.AgentEntry{"c1": {Secret: "s2"}}}))
	assert.ErrorIs(t, a.Authenticate(ctx, "c1", "s1"), tunnel.ErrUnauthorized)
	assert.NoError(t, a.Authenticate(ctx, "c1", "s2"))
}

func quotedPublicKey(t *testing.T) string {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	require.NoError(t, err)
	b := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	q := `"`
	for _, c := range string(b) {
		if c == '\n' {
			q += `\n`
		} else {
			q += string(c)
		}
	}
	return q + `"`
}
