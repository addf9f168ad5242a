package kubeconfig_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
	"github.com/clusterconnect/clusterconnect/kubeconfig"
)

// Main removes the home kubectl was given (kubetest.HomeEnv).
func TestMain(m *testing.M) { kubetest.Main(m) }

var caPEM = []byte("-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n")

// existing writes a kubeconfig with somebody's own cluster in it.
func existing(t *testing.T, path string) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["prod"] = &clientcmdapi.Cluster{Server: "https://prod.example.com:6443"}
	cfg.AuthInfos["prod-admin"] = &clientcmdapi.AuthInfo{Token: "prod-token"}
	cfg.Contexts["prod"] = &clientcmdapi.Context{Cluster: "prod", AuthInfo: "prod-admin", Namespace: "payments"}
	cfg.CurrentContext = "prod"
	cfg.Preferences.Colors = true
	require.NoError(t, clientcmd.WriteToFile(*cfg, path))
	require.NoError(t, os.Chmod(path, 0o600))
}

func load(t *testing.T, path string) *clientcmdapi.Config {
	cfg, err := clientcmd.LoadFromFile(path)
	require.NoError(t, err)
	return cfg
}

func TestMergeKeepsEverythingElse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	existing(t, path)
	got, err := kubeconfig.Merge(kubeconfig.Options{Path: path}, kubeconfig.ProxyEntry("edge-1", 0, caPEM))
	require.NoError(t, err)
	assert.Equal(t, path, got)

	cfg := load(t, path)
	assert.Equal(t, "prod", cfg.CurrentContext, "current context unchanged unless asked")
	assert.Equal(t, "https://prod.example.com:6443", cfg.Clusters["prod"].Server)
	assert.Equal(t, "prod-token", cfg.AuthInfos["prod-admin"].Token)
	assert.Equal(t, "payments", cfg.Contexts["prod"].Namespace)
	assert.True(t, cfg.Preferences.Colors)
	assert.Equal(t, "https://127.0.0.1:47011/clusters/edge-1", cfg.Clusters["edge-1"].Server, "one proxy serves a context per cluster")
	assert.Equal(t, caPEM, cfg.Clusters["edge-1"].CertificateAuthorityData)
	assert.Equal(t, kubeconfig.ProxyTokenPlaceholder, cfg.AuthInfos["edge-1"].Token)
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Merging again replaces by name, and can switch the current context.
	_, err = kubeconfig.Merge(kubeconfig.Options{Path: path, SetCurrentContext: true}, kubeconfig.ProxyEntry("edge-1", 48000, caPEM))
	require.NoError(t, err)
	cfg = load(t, path)
	assert.Equal(t, "https://127.0.0.1:48000/clusters/edge-1", cfg.Clusters["edge-1"].Server)
	assert.Equal(t, "edge-1", cfg.CurrentContext)
	assert.Len(t, cfg.Contexts, 2)
}

func TestMergeCreatesMissingFileAndDirectories(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dir", "config")
	_, err := kubeconfig.Merge(kubeconfig.Options{Path: path, SetCurrentContext: true}, kubeconfig.ProxyEntry("edge-1", 0, caPEM))
	require.NoError(t, err)
	assert.Equal(t, "edge-1", load(t, path).CurrentContext)
}

func TestKUBECONFIGListsAreHonoured(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "first"), filepath.Join(dir, "second")
	existing(t, first)
	_, err := kubeconfig.Merge(kubeconfig.Options{Path: second}, kubeconfig.ProxyEntry("edge-1", 0, caPEM))
	require.NoError(t, err)
	t.Setenv("KUBECONFIG", first+string(os.PathListSeparator)+second)

	// An existing context is updated where it lives…
	got, err := kubeconfig.Merge(kubeconfig.Options{}, kubeconfig.ProxyEntry("edge-1", 49000, caPEM))
	require.NoError(t, err)
	assert.Equal(t, second, got)
	assert.Equal(t, "https://127.0.0.1:49000/clusters/edge-1", load(t, second).Clusters["edge-1"].Server)
	assert.NotContains(t, load(t, first).Contexts, "edge-1")
	// …and a new one goes to the first file that exists, as kubectl does…
	got, err = kubeconfig.Merge(kubeconfig.Options{}, kubeconfig.ProxyEntry("edge-2", 0, caPEM))
	require.NoError(t, err)
	assert.Equal(t, first, got)
	assert.Contains(t, load(t, first).Contexts, "edge-2")

	// …or, when none exists yet, to the last.
	third, fourth := filepath.Join(dir, "third"), filepath.Join(dir, "fourth")
	t.Setenv("KUBECONFIG", third+string(os.PathListSeparator)+fourth)
	got, err = kubeconfig.Merge(kubeconfig.Options{}, kubeconfig.ProxyEntry("edge-3", 0, caPEM))
	require.NoError(t, err)
	assert.Equal(t, fourth, got)
	assert.NoFileExists(t, third)

	// kubectl itself reads the entry back from that list.
	res, err := (&kubetest.Kubectl{Env: []string{"KUBECONFIG=" + third + string(os.PathListSeparator) + fourth}}).Run(context.Background(), nil, "config", "get-contexts", "-o", "name")
	require.NoError(t, err)
	assert.Contains(t, res.Stdout, "edge-3")
}

func TestDefaultsToHomeKubeConfig(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("KUBECONFIG", "")
	got, err := kubeconfig.Merge(kubeconfig.Options{}, kubeconfig.ProxyEntry("edge-1", 0, caPEM))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(home, ".kube", "config"), got)
}

func TestConcurrentWritersLoseNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	existing(t, path)
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := kubeconfig.Merge(kubeconfig.Options{Path: path}, kubeconfig.ProxyEntry(fmt.Sprintf("edge-%d", i), 0, caPEM))
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	assert.Len(t, load(t, path).Contexts, 13)
	_, err := os.Stat(path + ".lock")
	assert.True(t, os.IsNotExist(err), "the lock is released")
}

func TestReadOnlyFileIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	existing(t, path)
	require.NoError(t, os.Chmod(path, 0o400))
	before, _ := os.ReadFile(path)
	_, err := kubeconfig.Merge(kubeconfig.Options{Path: path}, kubeconfig.ProxyEntry("edge-1", 0, caPEM))
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "read-only")
	after, _ := os.ReadFile(path)
	assert.Equal(t, before, after)
}

func TestSymlinks(t *testing.T) {
	dir := t.TempDir()
	target, link := filepath.Join(dir, "real-config"), filepath.Join(dir, "config")
	existing(t, target)
	require.NoError(t, os.Symlink(target, link))
	_, err := kubeconfig.Merge(kubeconfig.Options{Path: link}, kubeconfig.ProxyEntry("edge-1", 0, caPEM))
	require.NoError(t, err)
	assert.Contains(t, load(t, target).Contexts, "edge-1", "written through to the user's own file")
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	assert.NotZero(t, fi.Mode()&os.ModeSymlink, "the link is kept")

	odd := filepath.Join(dir, "odd")
	require.NoError(t, os.Symlink("/dev/null", odd))
	_, err = kubeconfig.Merge(kubeconfig.Options{Path: odd}, kubeconfig.ProxyEntry("edge-1", 0, caPEM))
	assert.ErrorContains(t, err, "not a regular file")
}

func TestWarnsAboutReadableFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	existing(t, path)
	require.NoError(t, os.Chmod(path, 0o644))
	var warnings []string
	_, err := kubeconfig.Merge(kubeconfig.Options{Path: path, Warnf: func(f string, a ...any) { warnings = append(warnings, fmt.Sprintf(f, a...)) }},
		kubeconfig.ProxyEntry("edge-1", 0, caPEM))
	require.NoError(t, err)
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "readable by others")
}

func TestRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	existing(t, path)
	_, err := kubeconfig.Merge(kubeconfig.Options{Path: path, SetCurrentContext: true},
		kubeconfig.ProxyEntry("edge-1", 0, caPEM), kubeconfig.ProxyEntry("edge-2", 0, caPEM))
	require.NoError(t, err)
	// A second context sharing edge-1's cluster keeps the cluster alive.
	_, err = kubeconfig.Merge(kubeconfig.Options{Path: path}, &kubeconfig.Entry{Name: "edge-1-ns", ClusterName: "edge-1", UserName: "edge-1", Server: "https://127.0.0.1:47011", Token: "x", Namespace: "ns"})
	require.NoError(t, err)

	_, err = kubeconfig.Remove(kubeconfig.Options{Path: path}, "edge-1", "edge-2")
	require.NoError(t, err)
	cfg := load(t, path)
	assert.NotContains(t, cfg.Contexts, "edge-1")
	assert.NotContains(t, cfg.Clusters, "edge-2")
	assert.NotContains(t, cfg.AuthInfos, "edge-2")
	assert.Contains(t, cfg.Clusters, "edge-1", "still used by edge-1-ns")
	assert.Contains(t, cfg.Contexts, "prod")
	assert.Empty(t, cfg.CurrentContext, "the removed context was current")

	_, err = kubeconfig.Remove(kubeconfig.Options{Path: path}, "never-there")
	assert.ErrorContains(t, err, `no context "never-there"`)
	assert.ErrorContains(t, err, path)
}

func TestStdout(t *testing.T) {
	var out strings.Builder
	_, err := kubeconfig.Merge(kubeconfig.Options{Path: "-", Stdout: &out}, kubeconfig.ProxyEntry("edge-1", 0, caPEM))
	require.NoError(t, err)
	cfg, err := clientcmd.Load([]byte(out.String()))
	require.NoError(t, err)
	assert.Equal(t, "edge-1", cfg.CurrentContext)
}

func TestInvalidEntriesAreNotWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	existing(t, path)
	_, err := kubeconfig.Merge(kubeconfig.Options{Path: path}, &kubeconfig.Entry{Name: "broken", Server: "https://x"})
	assert.ErrorContains(t, err, `entry "broken" needs exactly one of a token or an exec plugin`)
	assert.ErrorContains(t, err, path)
	_, err = kubeconfig.Merge(kubeconfig.Options{Path: path}, &kubeconfig.Entry{Name: "no-server", Token: "t"})
	assert.ErrorContains(t, err, "not be valid")
	assert.NotContains(t, load(t, path).Contexts, "no-server")
}

func TestKubectlReadsTheResult(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	existing(t, path)
	direct, err := kubeconfig.DirectEntry("edge-1", "https://relay.example.com", caPEM, "clusterconnect-proxy", "token", "--cluster", "edge-1")
	require.NoError(t, err)
	_, err = kubeconfig.Merge(kubeconfig.Options{Path: path, SetCurrentContext: true}, direct)
	require.NoError(t, err)
	k := &kubetest.Kubectl{Kubeconfig: path}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := k.MustRun(t, ctx, nil, "config", "view", "-o", "jsonpath={.current-context} {.clusters[?(@.name==\"edge-1\")].cluster.server} {.users[?(@.name==\"edge-1\")].user.exec.command}")
	assert.Equal(t, "edge-1 https://relay.example.com/clusters/edge-1 clusterconnect-proxy", out)
}

func TestExecCredential(t *testing.T) {
	exp := time.Date(2026, 11, 22, 21, 0, 0, 0, time.UTC)
	out, err := kubeconfig.ExecCredential(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "tok-1", Expiry: exp}))
	require.NoError(t, err)
	assert.JSONEq(t, `{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false},"status":{"token":"tok-1","expirationTimestamp":"2026-11-22T21:00:00Z"}}`, string(out))
}
