// Package httpx holds the small HTTP pieces the packages share. It imports
// nothing of Kubernetes, so that package tunnel can use it.
package httpx

import (
	"errors"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// IsUpgrade reports whether a request asks to switch protocols (kubectl
// exec, attach and port-forward over SPDY or WebSocket).
func IsUpgrade(h http.Header) bool {
	return httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") && h.Get("Upgrade") != ""
}

// SplitTransport sends upgrade requests over HTTP/1.1, since they cannot
// cross HTTP/2, and everything else over a transport that may use HTTP/2.
type SplitTransport struct {
	HTTP2, HTTP1 http.RoundTripper
}

// RoundTrip picks the transport for req.
func (t *SplitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if IsUpgrade(req.Header) {
		return t.HTTP1.RoundTrip(req)
	}
	return t.HTTP2.RoundTrip(req)
}

// Bearer errors.
var (
	ErrNoBearer       = errors.New("no bearer token: the Authorization header is missing")
	ErrManyAuthorized = errors.New("more than one Authorization header")
	ErrNotBearer      = errors.New("the Authorization header must be a bearer token")
)

// BearerToken reads the one bearer token of an Authorization header:
// ErrNoBearer when there is none, ErrManyAuthorized when the header comes
// more than once (which credential would count?), ErrNotBearer for
// another scheme or an empty token.
func BearerToken(h http.Header) (string, error) {
	auth := h.Values("Authorization")
	switch len(auth) {
	case 0:
		return "", ErrNoBearer
	case 1:
	default:
		return "", ErrManyAuthorized
	}
	scheme, tok, ok := strings.Cut(auth[0], " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", ErrNotBearer
	}
	return tok, nil
}
