package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/agent"
	"github.com/clusterconnect/clusterconnect/tokens"
)

func verifier(t *testing.T) *tokens.Verifier {
	v, err := tokens.NewVerifier(&tokens.Config{Issuers: []tokens.Issuer{{URL: "https://issuer.example", Audiences: []string{"a"}}}})
	require.NoError(t, err)
	return v
}

// What is wrong with a config, its credential included, is said by New,
// before the agent dials anything.
func TestNewRefusesIncompleteConfigs(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte("s\n"), 0o600))
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	ok := agent.Config{RelayURL: "https://relay.example", ClusterID: "c", Credential: agent.SecretFile(secret), Verifier: verifier(t),
		RESTConfig: &rest.Config{Host: "https://127.0.0.1:1"}}
	for _, tt := range []struct {
		name   string
		change func(*agent.Config)
		want   string
	}{
		{"no relay", func(c *agent.Config) { c.RelayURL = "" }, "relay URL and the cluster ID are required"},
		{"no credential", func(c *agent.Config) { c.Credential = nil }, "a credential is required"},
		{"no verifier", func(c *agent.Config) { c.Verifier = nil }, "token verifier is required"},
		{"a missing secret file", func(c *agent.Config) { c.Credential = agent.SecretFile(filepath.Join(dir, "none")) }, "no such file"},
		{"an empty secret file", func(c *agent.Config) { c.Credential = agent.SecretFile(empty) }, "is empty"},
		{"a key file that holds no key", func(c *agent.Config) { c.Credential = &agent.KeyFile{Path: secret, ClusterID: "c"} }, "not PEM"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			_, err := agent.New(&c)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err := agent.New(&ok)
	require.NoError(t, err)
}

// A secret file is read at every connection: a rotated secret is used
// from the next connection on.
func TestSecretFileIsReadEachTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(path, []byte("old\n"), 0o600))
	c := agent.SecretFile(path)
	s, err := c.Credential(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "old", s)
	require.NoError(t, os.WriteFile(path, []byte("  new\n"), 0o600))
	s, err = c.Credential(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "new", s)
}
