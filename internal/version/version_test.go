package version_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A binary built with the version stamped says it; one built from the
// tree says dev.
func TestStampedVersion(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ ldflags, want string }{
		{"-X github.com/clusterconnect/clusterconnect/internal/version.Version=v1.2.3", "v1.2.3 clusterconnect-agent/v1.2.3"},
		{"", "dev clusterconnect-agent/dev"},
	} {
		bin := filepath.Join(dir, "printversion")
		out, err := exec.Command("go", "build", "-ldflags", c.ldflags, "-o", bin, "./testdata/printversion").CombinedOutput()
		require.NoError(t, err, "%s", out)
		got, err := exec.Command(bin).Output()
		require.NoError(t, err)
		assert.Equal(t, c.want, strings.TrimSpace(string(got)))
	}
}
