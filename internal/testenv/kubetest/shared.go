package kubetest

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"
)

// TB is the part of testing.TB this package uses. It is an interface of its
// own so that the package does not import testing, and the quick trial,
// which starts the same environment, does not link it.
type TB interface {
	Helper()
	Name() string
	Skip(args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// shared is the one environment of a test package, started on first use.
var shared struct {
	mu      sync.Mutex
	started bool
	env     *Env
	err     error
	seen    map[string]TB // the tests that used this environment
}

// Main runs a package's tests and then stops the shared environment, if one
// was started. Call it from TestMain:
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
func Main(m interface{ Run() int }) {
	code := m.Run()
	if shared.env != nil {
		shared.env.Stop()
	}
	removeHome()
	os.Exit(code)
}

// Shared returns the package's environment, starting it on first use. The
// package's TestMain must call Main so that it is stopped.
//
// When a part is missing, the test fails with a message that names the
// install command if $CI is set, and is skipped with that message otherwise:
// CI never skips silently.
//
// Tests may leave objects behind. When a test that already used the
// environment runs again (go test -count=N runs every test N times in one
// process), it gets a fresh environment, so every run starts clean. Helpers
// that cache objects of the environment must key them on the *Env.
func Shared(tb TB) *Env {
	tb.Helper()
	shared.mu.Lock()
	if prev, ok := shared.seen[tb.Name()]; ok && prev != tb && shared.env != nil {
		shared.env.Stop()
		shared.started, shared.env, shared.err = false, nil, nil
	}
	if !shared.started {
		shared.started, shared.seen = true, map[string]TB{}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		shared.env, shared.err = Start(ctx)
		cancel()
	}
	shared.seen[tb.Name()] = tb
	shared.mu.Unlock()
	if shared.err != nil {
		Require(tb, shared.err)
	}
	return shared.env
}

// Require ends the test if err is not nil: a missing part skips the test
// outside CI and fails it in CI; any other error fails it.
func Require(tb TB, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrMissing) && !InCI() {
		tb.Skip(err.Error())
	}
	if errors.Is(err, ErrMissing) {
		tb.Fatalf("%v\n(CI=%q: a missing part fails the run instead of skipping)", err, os.Getenv("CI"))
	}
	tb.Fatal(err)
}

// InCI reports whether the tests run in CI ($CI set to anything but "" or
// "false"), where a missing part is an error, not a reason to skip.
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}
