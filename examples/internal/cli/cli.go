// Package cli holds what the example binaries share: flags that fall back
// to environment variables, logging, signals, files named by flags and
// small HTTP side servers.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/version"

	"github.com/clusterconnect/clusterconnect/internal/pki"
	"github.com/clusterconnect/clusterconnect/internal/tlsfile"
)

// EnvName is the environment variable for a flag: PREFIX_FLAG_NAME.
func EnvName(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ParseWithEnv parses args, then sets every flag not given on the command
// line from its environment variable, if that is set. Usage lists the
// variables. It adds -version, which prints VersionLine and returns
// flag.ErrHelp, as -h does.
func ParseWithEnv(fs *flag.FlagSet, prefix string, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {
		if usage != nil {
			usage()
		}
		example := "log-format"
		if fs.Lookup(example) == nil {
			fs.VisitAll(func(f *flag.Flag) {
				if fs.Lookup(example) == nil {
					example = f.Name
				}
			})
		}
		fmt.Fprintf(fs.Output(), "\nEvery flag can also be set by its environment variable, e.g. %s.\n", EnvName(prefix, example))
	}
	var showVersion *bool
	if fs.Lookup("version") == nil {
		showVersion = fs.Bool("version", false, "print which build this is, and exit")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if showVersion != nil && *showVersion {
		binary, _, _ := strings.Cut(fs.Name(), " ") // "proxy serve": the binary is proxy
		fmt.Println(VersionLine(binary))
		return flag.ErrHelp // done, as after -h
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || f.Name == "version" {
			return
		}
		if v, ok := os.LookupEnv(EnvName(prefix, f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", EnvName(prefix, f.Name), err))
			}
		}
	})
	return errors.Join(errs...)
}

// Logger returns a text or JSON logger on stderr.
func Logger(format string) (*slog.Logger, error) {
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), nil
	}
	return nil, fmt.Errorf("log format %q: use text or json", format)
}

// SignalContext ends on SIGINT or SIGTERM. A second such signal ends the
// process at once, by that signal, as a person pressing Ctrl-C again
// expects while a stop takes its time.
func SignalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-ch; !ok {
			return
		}
		cancel()
		sig, ok := <-ch
		if !ok {
			return
		}
		// Its default action again, and the signal again: the process
		// ends as the signal ends it.
		signal.Reset(sig)
		if s, isSys := sig.(syscall.Signal); isSys {
			syscall.Kill(os.Getpid(), s)
			time.Sleep(time.Second) // the runtime ends the process meanwhile
		}
		os.Exit(1)
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(ch)
			close(ch)
		})
		cancel()
	}
}

// SelfSigned returns a serving certificate for localhost from a CA kept
// in caDir, made there the first time, and writes the CA's certificate
// to caOut: agents and proxies that trust that file keep working across
// restarts. For trials only.
func SelfSigned(caDir, caOut string) (tls.Certificate, error) {
	ca, err := pki.LoadOrCreateCA(caDir, "clusterconnect relay CA (self-signed)", 365*24*time.Hour)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("-self-signed-dir: %w", err)
	}
	leaf, err := ca.Issue(pki.LeafOptions{CommonName: "relay", Hosts: pki.LoopbackHosts, Server: true})
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(caOut, ca.CertPEM(), 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("-ca-out: %w", err)
	}
	return leaf.TLSCertificate()
}

// ReadFileFlag reads a file named by a flag, naming the flag in the error.
func ReadFileFlag(flagName, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-%s: %w", flagName, err)
	}
	return b, nil
}

// CertPool reads a PEM CA file named by a flag into a pool, and fails when
// the file holds no certificate rather than trusting nothing.
func CertPool(flagName, path string) (*x509.CertPool, error) {
	p, _, err := tlsfile.Pool(path)
	if err != nil {
		return nil, fmt.Errorf("-%s: %w", flagName, err)
	}
	return p, nil
}

// RotatingCA is a client TLS config for the server at serverURL that
// trusts the PEM CA file named by a flag, read again when it changes: a
// rotated CA (the new one added beside the old, then the old removed) is
// trusted from the next handshake on, without a restart.
func RotatingCA(flagName, path, serverURL string) (*tls.Config, error) {
	roots, err := tlsfile.NewRoots(path)
	if err != nil {
		return nil, fmt.Errorf("-%s: %w", flagName, err)
	}
	u, err := url.Parse(serverURL)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("-%s needs the server's URL, https://host[:port] (got %q)", flagName, serverURL)
	}
	return roots.ClientConfig(nil, u.Hostname()), nil
}

// CertPEM reads a PEM CA file named by a flag, checking that it holds a
// certificate.
func CertPEM(flagName, path string) ([]byte, error) {
	_, b, err := tlsfile.Pool(path)
	if err != nil {
		return nil, fmt.Errorf("-%s: %w", flagName, err)
	}
	return b, nil
}

// CAClient returns an HTTP client that trusts only the PEM CA file named
// by a flag, with the given timeout for each request.
func CAClient(flagName, path string, timeout time.Duration) (*http.Client, error) {
	roots, err := CertPool(flagName, path)
	if err != nil {
		return nil, err
	}
	return tlsfile.Client(roots, timeout), nil
}

// VersionLine says which build a binary is: "clusterconnect relay v1.2.3
// (revision abc123, go1.26.8)".
func VersionLine(name string) string {
	rev := version.Revision()
	if rev == "" {
		rev = "unknown"
	}
	return fmt.Sprintf("clusterconnect %s %s (revision %s, %s)", name, version.String(), rev, runtime.Version())
}
