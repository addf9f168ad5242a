package main_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/kubernetes/scheme"
)

// The fleet manifest decodes as Kubernetes objects, and every flag its
// relay container is given, by argument or environment, is one the relay
// binary has.
func TestFleetManifestNamesRealFlags(t *testing.T) {
	bin := build(t)
	help, _ := exec.Command(filepath.Join(bin, "relay"), "-h").CombinedOutput()
	raw, err := os.ReadFile("deploy-fleet.yaml")
	require.NoError(t, err)
	var sts *appsv1.StatefulSet
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		require.NoError(t, err, "%s", doc)
		if s, ok := obj.(*appsv1.StatefulSet); ok {
			sts = s
		}
	}
	require.NotNil(t, sts)
	c := sts.Spec.Template.Spec.Containers[0]
	flag := regexp.MustCompile(`^-([a-z0-9-]+)=`)
	for _, a := range c.Args {
		m := flag.FindStringSubmatch(a)
		require.NotNil(t, m, a)
		assert.Contains(t, string(help), "  -"+m[1]+" ", "flag of %q", a)
	}
	for _, e := range c.Env {
		if name, ok := strings.CutPrefix(e.Name, "CLUSTERCONNECT_RELAY_"); ok {
			f := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
			assert.Contains(t, string(help), "  -"+f+" ", "flag of %s", e.Name)
		}
	}
	assert.EqualValues(t, 3, *sts.Spec.Replicas)
}
