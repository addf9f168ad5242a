package kubetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// KubeVersion is the kube-apiserver version the tests run against. Staging
// modules (k8s.io/api, k8s.io/apiserver, …) are pinned to the matching v0.Y.Z.
const KubeVersion = "v1.37.2"

// EtcdVersion is the etcd the tests run kube-apiserver and the fleet on:
// the 3.6 line Kubernetes 1.37 runs on, built from go.etcd.io/etcd/server/v3.
const EtcdVersion = "v3.6.16"

// PromtoolVersion is the promtool the charts' alerting rules are tested
// with (promtool test rules), built from github.com/prometheus/prometheus:
// Prometheus 3.16.
const PromtoolVersion = "v0.316.0"

// Environment variables that point at binaries instead of the defaults.
const (
	EnvAPIServer = "KUBE_APISERVER" // path to a kube-apiserver binary
	EnvEtcd      = "ETCD"           // path to an etcd binary
	EnvEtcd34    = "ETCD34"         // path to an etcd 3.4 binary, for the fleet's run against 3.4
	EnvKubectl   = "KUBECTL"        // path to a kubectl binary
)

// InstallHint is the command that installs every part this package needs.
const InstallHint = "./hack/test.sh (or: go run ./internal/testenv/kubetest/cmd/kubetest install)"

// MissingError reports a part of the test environment that is not installed.
type MissingError struct {
	Part string // "etcd", "kube-apiserver" or "kubectl"
	Why  string
}

// Error names what is missing and how to install it.
func (e *MissingError) Error() string {
	return fmt.Sprintf("kubetest: %s is missing (%s); install it with %s", e.Part, e.Why, InstallHint)
}

// ErrMissing matches every *MissingError with errors.Is.
var ErrMissing = errors.New("kubetest: a part of the test environment is missing")

// Is makes errors.Is(err, ErrMissing) true for a *MissingError.
func (e *MissingError) Is(target error) bool { return target == ErrMissing }

// CacheDir is where built binaries are kept between runs.
func CacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kubetest: no user cache dir: %w", err)
	}
	return filepath.Join(dir, "clusterconnect"), nil
}

// APIServerPath returns the kube-apiserver binary to use: $KUBE_APISERVER if
// set, else the cached build of KubeVersion. It does not build anything.
func APIServerPath() (string, error) {
	if p := os.Getenv(EnvAPIServer); p != "" {
		return checkExecutable("kube-apiserver", p)
	}
	p, err := cachedPath("kube-apiserver")
	if err != nil {
		return "", err
	}
	return checkExecutable("kube-apiserver", p)
}

// EtcdPath returns the etcd binary to use: $ETCD if set, else the cached
// build of EtcdVersion. It does not build anything (BuildEtcd does).
func EtcdPath() (string, error) {
	if p := os.Getenv(EnvEtcd); p != "" {
		return checkExecutable("etcd", p)
	}
	p, err := etcdCachedPath()
	if err != nil {
		return "", err
	}
	return checkExecutable("etcd", p)
}

// Etcd34Path returns an etcd 3.4 binary, the oldest release the fleet's
// directory runs on: $ETCD34 if set, else the one hack/test.sh takes out
// of Debian's etcd-server package into the cache (apt-get download and
// dpkg-deb -x: nothing is installed or started). The Go module proxy
// serves no 3.4 release of go.etcd.io/etcd to build.
func Etcd34Path() (string, error) {
	if p := os.Getenv(EnvEtcd34); p != "" {
		return checkExecutable("etcd 3.4", p)
	}
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	p, err := checkExecutable("etcd 3.4", filepath.Join(dir, "etcd-3.4", "etcd"))
	var missing *MissingError
	if errors.As(err, &missing) {
		missing.Why += "; on Debian, ./hack/test.sh takes it out of the etcd-server package without installing it"
	}
	return p, err
}

func etcdCachedPath() (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "etcd-"+EtcdVersion, "etcd"), nil
}

// BuildPromtool builds promtool PromtoolVersion from the Go module proxy
// into the cache, unless it is there already, and returns its path.
// Nothing is installed or started: Debian's prometheus package, which
// also has promtool, starts a Prometheus server and a node exporter.
func BuildPromtool(ctx context.Context, w io.Writer) (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "promtool-"+PromtoolVersion, "promtool")
	return buildOnce(ctx, w, "promtool "+PromtoolVersion, bin, func(work string) error {
		if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte("module kubetest.invalid/promtool\n\ngo 1.26\n"), 0o644); err != nil {
			return fmt.Errorf("kubetest: %w", err)
		}
		if _, err := goCmd(ctx, work, "get", "github.com/prometheus/prometheus@"+PromtoolVersion); err != nil {
			return err
		}
		_, err := goCmd(ctx, work, "build", "-o", bin+".tmp", "github.com/prometheus/prometheus/cmd/promtool")
		return err
	})
}

// BuildEtcd builds etcd EtcdVersion from the Go module proxy into the cache
// (a main of its own around go.etcd.io/etcd/server/v3/etcdmain, which is
// what etcd's own main is), unless it is there already, and returns its
// path. Nothing is installed or started: the binary runs only when a test
// starts it, on loopback ports in a temporary directory.
func BuildEtcd(ctx context.Context, w io.Writer) (string, error) {
	bin, err := etcdCachedPath()
	if err != nil {
		return "", err
	}
	return buildOnce(ctx, w, "etcd "+EtcdVersion, bin, func(work string) error {
		const mod = "module kubetest.invalid/etcd\n\ngo 1.26\n"
		const main = "package main\n\nimport (\n\t\"os\"\n\n\t\"go.etcd.io/etcd/server/v3/etcdmain\"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n"
		if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte(mod), 0o644); err != nil {
			return fmt.Errorf("kubetest: %w", err)
		}
		if err := os.WriteFile(filepath.Join(work, "main.go"), []byte(main), 0o644); err != nil {
			return fmt.Errorf("kubetest: %w", err)
		}
		if _, err := goCmd(ctx, work, "get", "go.etcd.io/etcd/server/v3@"+EtcdVersion); err != nil {
			return err
		}
		_, err := goCmd(ctx, work, "build", "-o", bin+".tmp", ".")
		return err
	})
}

// KubectlPath returns the kubectl binary: $KUBECTL if set, else kubectl on
// PATH, else a cached build of KubeVersion.
func KubectlPath() (string, error) {
	if p := os.Getenv(EnvKubectl); p != "" {
		return checkExecutable("kubectl", p)
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p, nil
	}
	p, err := cachedPath("kubectl")
	if err != nil {
		return "", err
	}
	return checkExecutable("kubectl", p)
}

func checkExecutable(part, p string) (string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", &MissingError{Part: part, Why: p + " does not exist"}
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", &MissingError{Part: part, Why: p + " is not an executable file"}
	}
	return p, nil
}

// cachedPath is where a command built from k8s.io/kubernetes is cached.
func cachedPath(command string) (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	// "-stamped": builds from before the version stamp answered /version
	// with v0.0.0-master and are not reused.
	return filepath.Join(dir, "kubernetes-"+KubeVersion+"-stamped", command), nil
}

// Build builds k8s.io/kubernetes/cmd/<command> at KubeVersion from the Go
// module proxy into the cache, unless it is there already, and returns its
// path. Progress goes to w. Concurrent callers (parallel test packages, two
// terminals) wait for one build through a lock file.
func Build(ctx context.Context, w io.Writer, command string) (string, error) {
	bin, err := cachedPath(command)
	if err != nil {
		return "", err
	}
	return buildOnce(ctx, w, command+" "+KubeVersion, bin, func(work string) error { return build(ctx, work, command, bin) })
}

// buildOnce runs build (in a throwaway directory it is given; it leaves
// its result at bin+".tmp") unless bin is there, under a lock file, and
// moves the result to bin.
func buildOnce(ctx context.Context, w io.Writer, what, bin string, build func(work string) error) (string, error) {
	if _, err := checkExecutable(what, bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", fmt.Errorf("kubetest: %w", err)
	}
	unlock, err := lockFile(filepath.Join(filepath.Dir(bin), "build.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := checkExecutable(what, bin); err == nil {
		return bin, nil // another process built it while we waited
	}
	work, err := os.MkdirTemp("", "kubetest-build-")
	if err != nil {
		return "", fmt.Errorf("kubetest: %w", err)
	}
	defer os.RemoveAll(work)

	fmt.Fprintf(w, "kubetest: building %s from the Go module proxy into %s\n", what, filepath.Dir(bin))
	fmt.Fprintf(w, "kubetest: this happens once; kube-apiserver takes about 6 minutes on 2 cores\n")
	start := time.Now()
	stop := progress(w, start)
	err = build(work)
	stop()
	if err != nil {
		os.Remove(bin + ".tmp")
		return "", err
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		return "", fmt.Errorf("kubetest: %w", err)
	}
	fmt.Fprintf(w, "kubetest: built %s in %s\n", what, time.Since(start).Round(time.Second))
	return bin, nil
}

// progress prints a line every 30 seconds until the returned func is called,
// so a long build does not look like a hang.
func progress(w io.Writer, start time.Time) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(w, "kubetest: still building (%s)\n", time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done) }
}

var stagingReplace = regexp.MustCompile(`(?m)^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/`)

// build makes a throwaway module that requires k8s.io/kubernetes and
// replaces each staging module with its published v0.Y.Z, then builds the
// command. k8s.io/kubernetes cannot be required as a plain dependency: its own
// go.mod points the staging modules at directories that are not in its zip.
func build(ctx context.Context, work, command, bin string) error {
	const header = "module kubetest.invalid/build\n\ngo 1.26\n"
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte(header), 0o644); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	out, err := goCmd(ctx, work, "mod", "download", "-json", "k8s.io/kubernetes@"+KubeVersion)
	if err != nil {
		return err
	}
	var info struct{ GoMod string }
	if err := json.Unmarshal(out, &info); err != nil || info.GoMod == "" {
		return fmt.Errorf("kubetest: reading go mod download output: %v", err)
	}
	upstream, err := os.ReadFile(info.GoMod)
	if err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	staging := "v0" + strings.TrimPrefix(KubeVersion, "v1")
	var mod strings.Builder
	mod.WriteString(header)
	fmt.Fprintf(&mod, "\nrequire k8s.io/kubernetes %s\n\n", KubeVersion)
	for _, m := range stagingReplace.FindAllStringSubmatch(string(upstream), -1) {
		fmt.Fprintf(&mod, "replace %s => %s %s\n", m[1], m[1], staging)
	}
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte(mod.String()), 0o644); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	_, err = goCmd(ctx, work, "build", "-mod=mod", "-ldflags", versionLDFlags(), "-o", bin+".tmp", "k8s.io/kubernetes/cmd/"+command)
	return err
}

func goCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	// The throwaway module must not see the caller's workspace or flags.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kubetest: go %s: %w\n%s", strings.Join(args, " "), err, tail(stderr.String(), 4000))
	}
	return out, nil
}

func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("kubetest: locking %s: %w", path, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// versionLDFlags stamps the build with its version as Kubernetes' own
// build does (hack/lib/version.sh): without it /version says
// v0.0.0-master+$Format:%H$ and kubectl version fails to parse it.
func versionLDFlags() string {
	major, minor, _ := strings.Cut(strings.TrimPrefix(KubeVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	vars := map[string]string{
		"gitVersion": KubeVersion, "gitMajor": major, "gitMinor": minor,
		"gitTreeState": "clean", "gitCommit": "module-proxy-" + KubeVersion, "buildDate": "1970-01-01T00:00:00Z",
	}
	var flags []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		for k, v := range vars {
			flags = append(flags, "-X "+pkg+"."+k+"="+v)
		}
	}
	sort.Strings(flags)
	return strings.Join(flags, " ")
}
