package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/kubetest"
)

// The README's quick trial, run as a newcomer would run it (with -once).
func TestTrialShowsKubectlWorkingThroughTheChain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	kubetest.Require(t, run(ctx, &out, "", 0, true))
	assert.Regexp(t, `Username\s+demo@contoso.example`, out.String())
	assert.Regexp(t, `Groups\s+\[11111111-2222-4333-8444-555555555555 system:authenticated\]`, out.String())
	assert.Regexp(t, `(?m)^default\s+Active`, out.String())
	assert.Regexp(t, `(?m)^no$`, out.String(), "the demo user may not delete namespaces")
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

func TestMain(m *testing.M) { kubetest.Main(m) }
