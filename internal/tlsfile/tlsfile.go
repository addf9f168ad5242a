// Package tlsfile reads the CA files that binaries and packages take by
// path, refusing a file that holds no certificate rather than trusting
// nothing.
package tlsfile

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"
)

// Pool reads a PEM CA file into a pool, and returns its bytes too.
func Pool(path string) (*x509.CertPool, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return p, b, nil
}

// Client returns an HTTP client that trusts only roots, with the default
// transport's proxy and pooling settings and the given timeout for each
// request.
func Client(roots *x509.CertPool, timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: roots}
	return &http.Client{Transport: t, Timeout: timeout}
}
