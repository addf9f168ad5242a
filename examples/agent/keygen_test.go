package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/clusterconnect/clusterconnect/agent"
	"github.com/clusterconnect/clusterconnect/relay"
)

// What keygen prints works as it says: the Secret holds a private key the
// agent signs with (-key-file, under the key the chart mounts), and the
// agents-file entry it prints lets a relay accept what the agent signs.
func TestKeygenMakesAKeyPairTheRelayAccepts(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.NoError(t, keygen([]string{"-cluster-id", "edge-7", "-namespace", "clusterconnect"}, &stdout, &stderr))

	var secret corev1.Secret
	require.NoError(t, yaml.UnmarshalStrict(stdout.Bytes(), &secret), stdout.String())
	assert.Equal(t, "Secret", secret.Kind)
	assert.Equal(t, "agent-credential", secret.Name)
	assert.Equal(t, "clusterconnect", secret.Namespace)
	key, ok := secret.StringData["credential"]
	require.True(t, ok, "the key deploy.yaml and the chart read: %v", secret.StringData)
	keyFile := filepath.Join(t.TempDir(), "credential")
	require.NoError(t, os.WriteFile(keyFile, []byte(key), 0o600))

	entry := stderr.String()[strings.Index(stderr.String(), "{"):]
	list, err := relay.ParseAgentList([]byte(entry))
	require.NoError(t, err, stderr.String())
	agents, err := relay.NewAgents(relay.AgentsConfig{PublicURL: "https://relay.example.com"})
	require.NoError(t, err)
	require.NoError(t, agents.Set(list))

	cred, err := (&agent.KeyFile{Path: keyFile, ClusterID: "edge-7", Audience: "https://relay.example.com"}).Credential(context.Background())
	require.NoError(t, err)
	assert.NoError(t, agents.Authenticate(context.Background(), "edge-7", cred), "the relay accepts the agent's assertion")
	assert.Error(t, agents.Authenticate(context.Background(), "edge-8", cred), "for its own cluster only")

	// A second pair is another pair.
	var again bytes.Buffer
	require.NoError(t, keygen([]string{"-cluster-id", "edge-7"}, &again, &bytes.Buffer{}))
	assert.NotEqual(t, stdout.String(), again.String())
	assert.NotContains(t, again.String(), "namespace:", "kubectl's namespace when none is given")
}

func TestKeygenRefusesWhatItCannotMake(t *testing.T) {
	for _, args := range [][]string{{}, {"-cluster-id", "not/an id"}, {"-cluster-id", "c", "extra"}} {
		var stdout bytes.Buffer
		assert.Error(t, keygen(args, &stdout, &bytes.Buffer{}), "%q", args)
		assert.Empty(t, stdout.String(), "no half-made Secret")
	}
}
