package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// shell runs kubectl as a user would type it, with one kubeconfig, and
// shows each command and what it printed.
type shell struct {
	out        *syncWriter
	kubeconfig string
}

// syncWriter lets a background kubectl and the tour write to out at once.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// lineWriter passes what one kubectl prints on to a shared writer a
// whole line at a time, so that a background kubectl's table rows are not
// cut by what the tour's next kubectl prints meanwhile (kubectl writes a
// row's cells in several writes).
type lineWriter struct {
	out     io.Writer
	mu      sync.Mutex
	pending []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = append(l.pending, p...)
	if i := bytes.LastIndexByte(l.pending, '\n'); i >= 0 {
		_, err := l.out.Write(l.pending[:i+1])
		l.pending = append(l.pending[:0], l.pending[i+1:]...)
		if err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush passes on the last line when kubectl did not end it.
func (l *lineWriter) Flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) > 0 {
		l.out.Write(l.pending)
		l.pending = l.pending[:0]
	}
}

// String is what was written, when w is a bytes.Buffer.
func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.w.(fmt.Stringer); ok {
		return b.String()
	}
	return ""
}

func (s *shell) command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	bin, err := kubetest.KubectlPath()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(s.out, "$ kubectl %s\n", quote(args))
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.kubeconfig)
	return cmd, nil
}

// run runs kubectl to the end. A non-zero exit is not an error: kubectl
// said why (auth can-i answers "no" with exit 1).
func (s *shell) run(ctx context.Context, args ...string) error {
	cmd, err := s.command(ctx, args...)
	if err != nil {
		return err
	}
	lines := &lineWriter{out: s.out}
	cmd.Stdout, cmd.Stderr = lines, lines
	err = cmd.Run()
	lines.Flush()
	fmt.Fprintln(s.out)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return nil
	}
	return err
}

// background runs a kubectl that does not end by itself (watch, logs -f,
// port-forward): once what it printed is ready, it calls during with that
// output; once it is done, it interrupts kubectl as Ctrl-C would.
func (s *shell) background(ctx context.Context, ready func(string) bool, during func(string) error, done func(string) bool, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd, err := s.command(ctx, args...)
	if err != nil {
		return err
	}
	buf := &syncWriter{w: new(bytes.Buffer)}
	lines := &lineWriter{out: s.out}
	w := io.MultiWriter(lines, buf)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	wait := func(cond func(string) bool) error {
		for cond != nil && !cond(buf.String()) {
			select {
			case err := <-exited:
				exited <- err
				return fmt.Errorf("kubectl %s ended early (%v)", quote(args), err)
			case <-ctx.Done():
				return fmt.Errorf("kubectl %s: %w", quote(args), ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		return nil
	}
	err = wait(ready)
	if err == nil && during != nil {
		err = during(buf.String())
	}
	if err == nil {
		err = wait(done)
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
	lines.Flush()
	fmt.Fprint(s.out, "^C\n\n")
	return err
}

func quote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " {}'\"") {
			a = "'" + a + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// watchedRow is the watch's whole row for the configmap the tour creates
// while it watches.
var watchedRow = regexp.MustCompile(`(?m)^watched\s.*\n`)

// tour shows, through the chain, what a developer does with a cluster:
// read, write, watch, exec, logs -f and port-forward, and what the demo
// user may not do.
func tour(ctx context.Context, sh *shell, webPort int) error {
	ns := "--namespace=" + demoNamespace
	for _, args := range [][]string{
		{"auth", "whoami"},
		{"get", "namespaces"},
		{"get", "pods", ns, "-o", "wide"},
		{"create", "configmap", "greeting", ns, "--from-literal=hello=world"},
		{"get", "configmap", "greeting", ns, "-o", "jsonpath={.data.hello}"},
	} {
		if err := sh.run(ctx, args...); err != nil {
			return err
		}
	}
	// A watch sees a change made by another kubectl.
	err := sh.background(ctx, func(out string) bool { return strings.Contains(out, "greeting") },
		func(string) error {
			return sh.run(ctx, "create", "configmap", "watched", ns, "--from-literal=seen=yes")
		},
		func(out string) bool { return watchedRow.MatchString(out) },
		"get", "configmaps", ns, "--watch")
	if err != nil {
		return err
	}
	for _, args := range [][]string{
		{"delete", "configmap", "greeting", "watched", ns},
		{"exec", demoPod, ns, "--", "echo", "hello from inside the pod"},
	} {
		if err := sh.run(ctx, args...); err != nil {
			return err
		}
	}
	// logs -f: the pod writes a line a second.
	err = sh.background(ctx, nil, nil, func(out string) bool { return strings.Count(out, "tick") >= 3 },
		"logs", "--follow", "--tail=1", demoPod, ns)
	if err != nil {
		return err
	}
	if err := portForward(ctx, sh, ns, webPort); err != nil {
		return err
	}
	return sh.run(ctx, "auth", "can-i", "delete", "namespaces")
}

var forwarding = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) ->`)

// portForward forwards a local port to the demo pod's web port and fetches
// the page through it, as a user would with curl.
func portForward(ctx context.Context, sh *shell, ns string, webPort int) error {
	return sh.background(ctx, forwarding.MatchString,
		func(out string) error {
			url := "http://127.0.0.1:" + forwarding.FindStringSubmatch(out)[1] + "/"
			fmt.Fprintf(sh.out, "$ curl %s\n", url)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("fetching through port-forward: %w", err)
			}
			defer resp.Body.Close()
			_, err = io.Copy(sh.out, resp.Body)
			return err
		}, nil, "port-forward", "pod/"+demoPod, ns, ":"+strconv.Itoa(webPort))
}
