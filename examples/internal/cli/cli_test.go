package cli_test

import (
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/examples/internal/cli"
)

func TestFlagsFallBackToEnvironment(t *testing.T) {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	listen := fs.String("listen", ":8443", "")
	agents := fs.String("agents", "", "")
	format := fs.String("log-format", "text", "")
	t.Setenv("CLUSTERCONNECT_RELAY_LISTEN", "127.0.0.1:9443")
	t.Setenv("CLUSTERCONNECT_RELAY_AGENTS", "from-env.json")
	t.Setenv("CLUSTERCONNECT_RELAY_LOG_FORMAT", "json")

	require.NoError(t, cli.ParseWithEnv(fs, "CLUSTERCONNECT_RELAY", []string{"-agents", "from-flag.json"}))
	assert.Equal(t, "127.0.0.1:9443", *listen, "unset flag: the environment")
	assert.Equal(t, "from-flag.json", *agents, "the command line wins")
	assert.Equal(t, "json", *format)

	fs2 := flag.NewFlagSet("x", flag.ContinueOnError)
	fs2.Int("connections", 2, "")
	t.Setenv("X_CONNECTIONS", "many")
	assert.ErrorContains(t, cli.ParseWithEnv(fs2, "X", nil), "X_CONNECTIONS")
}
