package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// The README's quick trial, run as a newcomer would run it (with -once):
// every step of the tour must show what a user would see.
func TestTrialShowsKubectlWorkingThroughTheChain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	kubetest.Require(t, run(ctx, &out, "", 0, true))
	got := out.String()
	proxyMode, directMode, ok := strings.Cut(got, "--- Direct mode")
	require.True(t, ok, got)
	for _, want := range []string{
		`Username\s+demo@contoso.example`,
		`Groups\s+\[11111111-2222-4333-8444-555555555555 system:authenticated\]`,
		`(?m)^default\s+Active`,
		`(?m)^hello\s+1/1\s+Running`,                                       // the stand-in pod
		`configmap/greeting created`,                                       // a write
		`(?m)^world$`,                                                      // read back
		`(?m)^watched\s+1\s`,                                               // the watch saw another kubectl's change
		`configmap "greeting" deleted`,                                     // a delete
		`(?m)^hello from inside the pod$`,                                  // exec
		`(?s)tick \d+.*tick \d+.*tick \d+`,                                 // logs -f, three lines as they came
		`hello from the demo pod's port \d+, through kubectl port-forward`, // port-forward
		`(?m)^no$`, // the demo user may not delete namespaces
	} {
		assert.Regexp(t, want, proxyMode)
	}
	for _, want := range []string{
		`To sign in, open https://127\.0\.0\.1:\d+/devicelogin in a browser and enter the code`,
		`Username\s+demo@contoso.example`,
		`(?m)^hello\s+1/1\s+Running`,
		`(?m)^hello$`, // exec hostname
	} {
		assert.Regexp(t, want, directMode)
	}
	assert.Equal(t, 1, strings.Count(directMode, "To sign in"), "one sign-in, then the cached token")
	for _, want := range []string{"relay  ", "token command", "clusterconnect-proxy token -login devicecode", "admin (no chain)"} {
		assert.Contains(t, directMode, want)
	}
	if t.Failed() {
		t.Log(got)
	}
}

// -kubeconfig connects a cluster that already exists (here the test
// environment's, through its admin kubeconfig) and creates nothing in it.
func TestTrialConnectsAnExistingCluster(t *testing.T) {
	env := kubetest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, env.Kubeconfig, 0, true))
	assert.Regexp(t, `Username\s+demo@contoso.example`, out.String())
	assert.Contains(t, out.String(), "Error from server (Forbidden)", "the demo user has no rights in someone else's cluster")
	assert.Contains(t, out.String(), "kubectl create clusterrolebinding clusterconnect-trial")
}

// TestMain runs the trial's kubectl with a cache of the tests' own, out
// of the user's ~/.kube (the trial itself, run by a user, lets kubectl
// cache where it always does).
func TestMain(m *testing.M) {
	for _, kv := range kubetest.HomeEnv() { // removed by Main
		if home, ok := strings.CutPrefix(kv, "HOME="); ok {
			os.Setenv("KUBECACHEDIR", filepath.Join(home, ".kube", "cache"))
		}
	}
	kubetest.Main(m)
}

// A background kubectl's row stays whole while the tour's next kubectl
// prints in the middle of it, as the watch's row did when kubectl wrote
// its cells apart.
func TestKubectlsPrintingAtOnceKeepTheirLinesWhole(t *testing.T) {
	var buf bytes.Buffer
	out := &syncWriter{w: &buf}
	watch, create := &lineWriter{out: out}, &lineWriter{out: out}
	for _, w := range []struct {
		to *lineWriter
		s  string
	}{
		{watch, "greeting   1      0s\nwatched"},
		{create, "configmap/watched created\n"},
		{watch, "    1      0s\n"},
		{watch, "^C"},
	} {
		_, err := w.to.Write([]byte(w.s))
		require.NoError(t, err)
	}
	watch.Flush()
	assert.Equal(t, "greeting   1      0s\nconfigmap/watched created\nwatched    1      0s\n^C", buf.String())
}
