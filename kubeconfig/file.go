package kubeconfig

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Options says where and how Merge and Remove write.
type Options struct {
	// Path of the kubeconfig file. Empty means the file kubectl would
	// change: among the $KUBECONFIG files, the one that already has the
	// context, else the first that exists, else the last (as kubectl
	// writes new entries); without $KUBECONFIG, ~/.kube/config. "-"
	// makes Merge write a kubeconfig with only the new entries to Stdout.
	Path string
	// SetCurrentContext makes the (first) merged entry the current context.
	SetCurrentContext bool
	// Stdout receives the kubeconfig when Path is "-"; default os.Stdout.
	Stdout io.Writer
	// Warnf receives warnings, such as a file others can read; nil
	// discards them.
	Warnf func(format string, args ...any)
}

// lockWait bounds how long Merge and Remove wait for another writer.
const lockWait = 10 * time.Second

// Merge adds the entries to a kubeconfig file, replacing entries of the
// same names and keeping everything else, and returns the file's path. The
// file is validated before it is written, written whole (a temporary file
// renamed over it) with mode 0600, and locked against concurrent writers
// the way kubectl locks it.
func Merge(opts Options, entries ...*Entry) (string, error) {
	if len(entries) == 0 {
		return "", errors.New("kubeconfig: nothing to merge")
	}
	if opts.Path == "-" {
		cfg, err := Generate(entries...)
		if err != nil {
			return "", err
		}
		out, err := clientcmd.Write(*cfg)
		if err != nil {
			return "", fmt.Errorf("kubeconfig: %w", err)
		}
		w := opts.Stdout
		if w == nil {
			w = os.Stdout
		}
		_, err = w.Write(out)
		return "-", err
	}
	return update(opts, entries[0].Name, func(cfg *clientcmdapi.Config) error {
		for _, e := range entries {
			if err := e.apply(cfg); err != nil {
				return err
			}
		}
		if opts.SetCurrentContext {
			cfg.CurrentContext = entries[0].Name
		}
		return nil
	})
}

// Remove deletes the named contexts from a kubeconfig file, with their
// cluster and user entries unless another context still uses them, and
// clears the current context if it was one of them.
func Remove(opts Options, names ...string) (string, error) {
	if opts.Path == "-" {
		return "", errors.New("kubeconfig: cannot remove entries from standard output")
	}
	if len(names) == 0 {
		return "", errors.New("kubeconfig: nothing to remove")
	}
	return update(opts, names[0], func(cfg *clientcmdapi.Config) error {
		for _, name := range names {
			ctx, ok := cfg.Contexts[name]
			if !ok {
				return fmt.Errorf("kubeconfig: no context %q", name)
			}
			delete(cfg.Contexts, name)
			if cfg.CurrentContext == name {
				cfg.CurrentContext = ""
			}
			if !referenced(cfg, func(c *clientcmdapi.Context) bool { return c.Cluster == ctx.Cluster }) {
				delete(cfg.Clusters, ctx.Cluster)
			}
			if !referenced(cfg, func(c *clientcmdapi.Context) bool { return c.AuthInfo == ctx.AuthInfo }) {
				delete(cfg.AuthInfos, ctx.AuthInfo)
			}
		}
		return nil
	})
}

func referenced(cfg *clientcmdapi.Config, uses func(*clientcmdapi.Context) bool) bool {
	for _, c := range cfg.Contexts {
		if uses(c) {
			return true
		}
	}
	return false
}

// update locks, loads, changes, validates and writes one file.
func update(opts Options, context string, change func(*clientcmdapi.Config) error) (string, error) {
	path := opts.Path
	if path == "" {
		var err error
		if path, err = defaultPath(context); err != nil {
			return "", err
		}
	}
	real, err := resolve(path)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(real), 0o700); err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	unlock, err := lock(real)
	if err != nil {
		return "", err
	}
	defer unlock()

	cfg := clientcmdapi.NewConfig()
	fi, err := os.Stat(real)
	switch {
	case err == nil:
		if fi.Mode().Perm()&0o200 == 0 {
			return "", fmt.Errorf("kubeconfig: %s is read-only; make it writable or choose another file", path)
		}
		if fi.Mode().Perm()&0o077 != 0 && opts.Warnf != nil {
			opts.Warnf("kubeconfig %s is readable by others (mode %v); it holds credentials: chmod 600 %s", path, fi.Mode().Perm(), path)
		}
		if cfg, err = clientcmd.LoadFromFile(real); err != nil {
			return "", fmt.Errorf("kubeconfig: reading %s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	if err := change(cfg); err != nil {
		return "", fmt.Errorf("%w (in %s)", err, path)
	}
	if err := clientcmd.Validate(*cfg); err != nil && !clientcmd.IsEmptyConfig(err) {
		return "", fmt.Errorf("kubeconfig: %s would not be valid, not written: %w", path, err)
	}
	out, err := clientcmd.Write(*cfg)
	if err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	return path, writeAtomic(real, out)
}

// defaultPath picks the file kubectl would change for a context: among the
// $KUBECONFIG files the one that already has it, else the one kubectl
// writes new entries to (clientcmd's default file: the first that exists,
// else the last); without $KUBECONFIG, ~/.kube/config.
func defaultPath(context string) (string, error) {
	opts := clientcmd.NewDefaultPathOptions()
	if files := opts.GetEnvVarFiles(); len(files) > 0 {
		for _, p := range files {
			if cfg, err := clientcmd.LoadFromFile(p); err == nil {
				if _, ok := cfg.Contexts[context]; ok {
					return p, nil
				}
			}
		}
		return opts.GetDefaultFilename(), nil
	}
	// Not clientcmd.RecommendedHomeFile: it is fixed when the program
	// starts, and HOME may have changed since.
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("kubeconfig: no home directory for ~/.kube/config: %w", err)
	}
	return filepath.Join(home, ".kube", "config"), nil
}

// resolve follows a symlink only to a regular file of the current user:
// a link to someone else's file, or to a device, is refused rather than
// written through.
func resolve(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return path, nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("kubeconfig: %s is a dangling symlink: %w", path, err)
	}
	target, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	if !target.Mode().IsRegular() {
		return "", fmt.Errorf("kubeconfig: %s links to %s, which is not a regular file; refusing to write through it", path, real)
	}
	if st, ok := target.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return "", fmt.Errorf("kubeconfig: %s links to %s, which belongs to another user; refusing to write through it", path, real)
	}
	return real, nil
}

// lock takes kubectl's lock on a kubeconfig file: an exclusively created
// <file>.lock, waiting for another holder for up to lockWait.
func lock(path string) (unlock func(), err error) {
	name := path + ".lock"
	deadline := time.Now().Add(lockWait)
	for {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			f.Close()
			return func() { os.Remove(name) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("kubeconfig: locking %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("kubeconfig: %s is locked by another writer (%s exists; remove it if no kubectl is running)", path, name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeAtomic writes data to a temporary file beside path and renames it
// over path, so readers see the old file or the new one, never half.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("kubeconfig: writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("kubeconfig: writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("kubeconfig: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("kubeconfig: replacing %s: %w", path, err)
	}
	return nil
}
