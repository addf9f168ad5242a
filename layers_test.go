package clusterconnect_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/clusterconnect/clusterconnect"

// The packages' imports run downward only, in three tiers above the
// library: the library's own helpers (internal/…) import no package of
// the library; test environments (internal/testenv/…) may import the
// library, but no library code imports them; the binaries' helpers
// (examples/internal/…) and the binaries import anything, and nothing
// imports them but the binaries.
func TestImportsRunDownward(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	tier := func(pkg string) string {
		p := strings.TrimPrefix(pkg, module+"/")
		switch {
		case strings.HasPrefix(p, "examples/"):
			return "binaries"
		case strings.HasPrefix(p, "internal/testenv/"):
			return "testenv"
		case strings.HasPrefix(p, "internal/"):
			return "helpers"
		}
		return "library"
	}
	allowed := map[string][]string{
		"helpers":  {"helpers"},
		"library":  {"helpers", "library"},
		"testenv":  {"helpers", "library", "testenv"},
		"binaries": {"helpers", "library", "testenv", "binaries"},
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		from := tier(fields[0])
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module+"/") && imp != module {
				continue
			}
			to := tier(imp)
			ok := false
			for _, a := range allowed[from] {
				ok = ok || a == to
			}
			if !ok {
				t.Errorf("%s (%s) imports %s (%s): the arrow runs back up", fields[0], from, imp, to)
			}
		}
	}
}
