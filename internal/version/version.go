// Package version says which build of clusterconnect is running, for the
// binaries' -version, the build_info metric and the User-Agent the agent
// and the client proxy send.
//
// The version is, first found: what the build stamped
// (go build -ldflags "-X github.com/clusterconnect/clusterconnect/internal/version.Version=v1.2.3",
// as hack/images.sh does), the module's version as Go recorded it (go
// install …@v1.2.3, or an importer's go.mod), else "dev". The revision is
// the VCS commit Go recorded, with "-dirty" for a modified tree.
package version

import (
	"runtime/debug"
	"sync"
)

// Version is stamped at build time; empty means: ask the build info.
var Version string

const module = "github.com/clusterconnect/clusterconnect"

var resolved = sync.OnceValues(func() (version, revision string) {
	version = Version
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return orDev(version), ""
	}
	if version == "" {
		if bi.Main.Path == module {
			version = bi.Main.Version
		}
		for _, d := range bi.Deps {
			if d.Path == module && version == "" {
				version = d.Version
			}
		}
	}
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && revision != "" {
		revision += "-dirty"
	}
	return orDev(version), revision
})

// orDev is v, unless it says nothing: a build from a source tree has the
// version "(devel)".
func orDev(v string) string {
	if v == "" || v == "(devel)" {
		return "dev"
	}
	return v
}

// String is the version of this build.
func String() string { v, _ := resolved(); return v }

// Revision is the VCS commit this build was made from, if Go recorded it.
func Revision() string { _, r := resolved(); return r }

// UserAgent is what a component of the project sends as its User-Agent:
// "clusterconnect-agent/v1.2.3".
func UserAgent(component string) string { return "clusterconnect-" + component + "/" + String() }
