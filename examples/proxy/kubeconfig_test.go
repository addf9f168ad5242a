package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"
)

// Direct mode writes a kubeconfig that keeps working from any directory:
// the plugin is an absolute path to a binary that stays, and the token
// file an absolute path. A temporary build (go run) is refused.
func TestDirectKubeconfigSurvives(t *testing.T) {
	dir := t.TempDir()
	bin := proxyBin
	work := filepath.Join(dir, "work")
	require.NoError(t, os.MkdirAll(work, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(work, "token.txt"), []byte("t0ken"), 0o600))

	kubeconfigFor := func(binary string, extra ...string) (string, []byte, error) {
		kc := filepath.Join(dir, "kubeconfig-"+filepath.Base(filepath.Dir(filepath.Dir(binary))))
		cmd := exec.Command(binary, append([]string{"kubeconfig", "-relay-url", "https://relay.example.com", "-cluster-id", "prod",
			"-token-file", "token.txt", "-kubeconfig", kc}, extra...)...)
		cmd.Dir = work
		out, err := cmd.CombinedOutput()
		return kc, out, err
	}

	kc, out, err := kubeconfigFor(bin)
	require.NoError(t, err, "%s", out)
	cfg, err := clientcmd.LoadFromFile(kc)
	require.NoError(t, err)
	var user string
	for _, ctx := range cfg.Contexts {
		user = ctx.AuthInfo
	}
	execCfg := cfg.AuthInfos[user].Exec
	require.NotNil(t, execCfg)
	assert.Equal(t, bin, execCfg.Command)
	assert.Contains(t, execCfg.Args, filepath.Join(work, "token.txt"), "the token file by its absolute path")

	// What go run leaves behind.
	tmp := filepath.Join(dir, "go-build123", "b001", "exe", "proxy")
	require.NoError(t, os.MkdirAll(filepath.Dir(tmp), 0o700))
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(tmp, data, 0o700))
	_, out, err = kubeconfigFor(tmp)
	require.Error(t, err)
	assert.Contains(t, string(out), "go install github.com/clusterconnect/clusterconnect/examples/proxy@latest")

	// Unless it names the installed one.
	kc, out, err = kubeconfigFor(tmp, "-exec-path", bin)
	require.NoError(t, err, "%s", out)
	cfg, err = clientcmd.LoadFromFile(kc)
	require.NoError(t, err)
	for _, ai := range cfg.AuthInfos {
		assert.Equal(t, bin, ai.Exec.Command)
	}
}

// Each subcommand's -h lists the flags it reads and no others.
func TestEachSubcommandListsItsOwnFlags(t *testing.T) {
	flagsOf := func(cmd string) string {
		out, _ := exec.Command(proxyBin, cmd, "-h").CombinedOutput()
		_, flags, _ := strings.Cut(string(out), "Flags of "+cmd+":")
		return flags
	}
	token := flagsOf("token")
	assert.Contains(t, token, "-token-file")
	assert.NotContains(t, token, "LOG_FORMAT", "the environment example names a flag token has")
	for _, f := range []string{"-relay-url", "-kubeconfig", "-port", "-pass-client-token"} {
		assert.NotContains(t, token, f+" ", "proxy token does not read %s", f)
	}
	kc := flagsOf("kubeconfig")
	assert.Contains(t, kc, "-exec-path")
	assert.NotContains(t, kc, "-port ")
	assert.NotContains(t, kc, "-pass-client-token")
	serve := flagsOf("serve")
	assert.Contains(t, serve, "-port")
	assert.NotContains(t, serve, "-exec-path")
}
