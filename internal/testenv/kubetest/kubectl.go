package kubetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Kubectl runs the real kubectl against a kubeconfig file.
type Kubectl struct {
	Kubeconfig string
	// Env holds extra environment variables, e.g.
	// KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false to make exec use SPDY.
	Env []string
}

// Command returns an unstarted kubectl command. The command is killed when
// ctx ends.
func (k *Kubectl) Command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	bin, err := KubectlPath()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig=" + k.Kubeconfig}, args...)...)
	// KUBECONFIG and HOME must not leak the developer's own clusters in,
	// nor kubectl's caches out.
	cmd.Env = append(os.Environ(), "KUBECONFIG="+k.Kubeconfig)
	cmd.Env = append(cmd.Env, HomeEnv()...)
	cmd.Env = append(cmd.Env, k.Env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// Result is what a finished kubectl printed.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Run runs kubectl to completion with stdin as its input (nil for none).
// A non-zero exit is reported in Result, not as an error; the error is for
// kubectl not running at all.
func (k *Kubectl) Run(ctx context.Context, stdin io.Reader, args ...string) (Result, error) {
	cmd, err := k.Command(ctx, args...)
	if err != nil {
		return Result{}, err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdin = stdin
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err = cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: cmd.ProcessState.ExitCode()}
	if _, ok := err.(*exec.ExitError); ok && ctx.Err() == nil {
		err = nil
	}
	if err != nil {
		return res, fmt.Errorf("kubetest: kubectl %s: %w (stderr: %s)", strings.Join(args, " "), err, res.Stderr)
	}
	return res, nil
}

// MustRun runs kubectl and fails the test unless it exits 0.
func (k *Kubectl) MustRun(tb TB, ctx context.Context, stdin io.Reader, args ...string) string {
	tb.Helper()
	res, err := k.Run(ctx, stdin, args...)
	Require(tb, err)
	if res.ExitCode != 0 {
		tb.Fatalf("kubectl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}
