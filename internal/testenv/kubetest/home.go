package kubetest

import (
	"os"
	"path/filepath"
	"sync"
)

// home is the process's stand-in home directory: see HomeEnv.
var home struct {
	once sync.Once
	dir  string
}

// HomeEnv is the environment that points a child process's home, config
// and cache directories (HOME, XDG_CONFIG_HOME, XDG_CACHE_HOME) at one
// temporary directory of this test process, so that what kubectl (its
// discovery cache), a client proxy (its CA) or a token cache write stays
// out of the user's own. Kubectl puts it in every command; tests that
// start the project's binaries put it in theirs. Main removes it.
func HomeEnv() []string {
	home.once.Do(func() {
		dir, err := os.MkdirTemp("", "kubetest-home-")
		if err != nil {
			dir = filepath.Join(os.TempDir(), "kubetest-home")
		}
		home.dir = dir
	})
	return []string{"HOME=" + home.dir, "XDG_CONFIG_HOME=" + filepath.Join(home.dir, ".config"), "XDG_CACHE_HOME=" + filepath.Join(home.dir, ".cache")}
}

// removeHome removes the stand-in home, if one was made.
func removeHome() {
	if home.dir != "" {
		os.RemoveAll(home.dir)
	}
}
