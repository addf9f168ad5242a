// Package cli holds what the example binaries share: flags that fall back
// to environment variables, logging, signals and small HTTP side servers.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// EnvName is the environment variable for a flag: PREFIX_FLAG_NAME.
func EnvName(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ParseWithEnv parses args, then sets every flag not given on the command
// line from its environment variable, if that is set. Usage lists the
// variables.
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
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

// SignalContext ends on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Serve runs srv on addr until ctx ends, then shuts it down gracefully.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger, what string) {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		log.Info("serving "+what, "addr", addr)
		err = httpx.ServeUntil(ctx, srv, ln, 5*time.Second)
	}
	if err != nil {
		log.Error(what+" stopped", "err", err)
	}
}

// NewRegistry returns a Prometheus registry with the Go runtime and
// process collectors, for a binary's own metrics and the libraries' it
// passes it to.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricsHandler serves reg in the Prometheus exposition format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil, Registry: reg})
}

// OK answers 200 "ok": a liveness endpoint.
var OK = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })

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
	_, p, err := readCerts(flagName, path)
	return p, err
}

// CertPEM reads a PEM CA file named by a flag, checking that it holds a
// certificate.
func CertPEM(flagName, path string) ([]byte, error) {
	b, _, err := readCerts(flagName, path)
	return b, err
}

func readCerts(flagName, path string) ([]byte, *x509.CertPool, error) {
	b, err := ReadFileFlag(flagName, path)
	if err != nil {
		return nil, nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, nil, fmt.Errorf("-%s %s holds no PEM certificate", flagName, path)
	}
	return b, p, nil
}

// CAClient returns an HTTP client that trusts only the PEM CA file named
// by a flag, with the default transport's proxy and pooling settings and
// the given timeout for each request.
func CAClient(flagName, path string, timeout time.Duration) (*http.Client, error) {
	roots, err := CertPool(flagName, path)
	if err != nil {
		return nil, err
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: roots}
	return &http.Client{Transport: t, Timeout: timeout}, nil
}
