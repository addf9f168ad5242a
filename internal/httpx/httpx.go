// Package httpx holds the small HTTP pieces the impersonation handler and
// the client proxy share.
package httpx

import (
	"encoding/json"
	"net/http"

	"golang.org/x/net/http/httpguts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// WriteStatus answers with a Kubernetes Status, which kubectl prints as a
// readable error.
func WriteStatus(w http.ResponseWriter, code int, message string) {
	reason := metav1.StatusReasonUnknown
	switch code {
	case http.StatusUnauthorized:
		reason = metav1.StatusReasonUnauthorized
	case http.StatusForbidden:
		reason = metav1.StatusReasonForbidden
	case http.StatusServiceUnavailable:
		reason = metav1.StatusReasonServiceUnavailable
	case http.StatusBadGateway, http.StatusInternalServerError:
		reason = metav1.StatusReasonInternalError
	}
	body, _ := json.Marshal(metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: message, Reason: reason, Code: int32(code),
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if code == http.StatusUnauthorized {
		w.Header().Set("Www-Authenticate", `Bearer realm="clusterconnect"`)
	}
	w.WriteHeader(code)
	w.Write(body)
}
