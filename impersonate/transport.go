package impersonate

import (
	"fmt"
	"net/http"

	"k8s.io/client-go/rest"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// newTransport returns client-go's transport for rc (credentials, TLS, token
// file rotation), split by request: HTTP/2 for ordinary requests, an
// HTTP/1.1-only twin for upgrades, which cannot cross HTTP/2.
func newTransport(rc *rest.Config) (http.RoundTripper, error) {
	h2, err := rest.TransportFor(rc)
	if err != nil {
		return nil, fmt.Errorf("impersonate: transport: %w", err)
	}
	c1 := rest.CopyConfig(rc)
	c1.TLSClientConfig.NextProtos = []string{"http/1.1"}
	h1, err := rest.TransportFor(c1)
	if err != nil {
		return nil, fmt.Errorf("impersonate: upgrade transport: %w", err)
	}
	return &httpx.SplitTransport{HTTP2: h2, HTTP1: h1}, nil
}
