package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/kubeconfig"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// token is the exec credential plugin kubectl runs in direct mode: it
// prints an ExecCredential with the user's token. pluginPath says where
// kubectl finds it.
func token(args []string) error {
	fs, c := flags("token", tokenFlags)
	if ok, err := parse(fs, args); !ok {
		return err
	}
	src, err := c.tokens.TokenSource()
	if err != nil {
		return err
	}
	// What the relay would refuse, the plugin says with what to do, on
	// stderr, which kubectl shows as it is (the relay's words reach
	// kubectl only as a Warning before kubectl's own).
	dir := c.tokens.CacheDir
	if dir == "" {
		dir, _ = source.DefaultCacheDir()
	}
	tok, err := src.Token()
	if err == nil {
		err = c.tokens.CheckToken(tok, time.Now())
	}
	if err != nil {
		return sayOnce(err, dir)
	}
	tok = stepUpIfAsked(c.tokens, src, tok, dir)
	out, err := kubeconfig.ExecCredential(oauth2.StaticTokenSource(tok))
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(out))
	return err
}

// pluginPath is the absolute path of the binary kubectl is to run for
// tokens: path if given, else this program, unless this program is a
// temporary build (go run), which is gone, or replaced, by the time
// kubectl needs it.
func pluginPath(path string) (string, error) {
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		if temporaryBuild(self) {
			return "", fmt.Errorf("this proxy is a temporary build (%s, from go run): kubectl could not run it later. "+
				"Install it and run that one instead:\n\tgo install github.com/clusterconnect/clusterconnect/examples/proxy@latest\n"+
				"or name an installed proxy with -exec-path", self)
		}
		path = self
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		abs = resolved
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("-exec-path %s is not an executable file", abs)
	}
	return abs, nil
}

// temporaryBuild reports whether path is where go run puts the programs
// it builds: a go-build directory under the temporary directory, or the
// Go build cache.
func temporaryBuild(path string) bool {
	for _, dir := range strings.Split(filepath.ToSlash(filepath.Dir(path)), "/") {
		if strings.HasPrefix(dir, "go-build") {
			return true
		}
	}
	if cache := os.Getenv("GOCACHE"); cache != "" && strings.HasPrefix(path, filepath.Clean(cache)+string(filepath.Separator)) {
		return true
	}
	return false
}
