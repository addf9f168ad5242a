// Package kstatus writes Kubernetes Status bodies for the impersonation
// handler and the client proxy, so that kubectl prints a refusal's words.
// (Package tunnel, which imports nothing of Kubernetes, has its own.)
package kstatus

import (
	"encoding/json"
	"net/http"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Write answers r with a Kubernetes Status, which kubectl prints as a
// readable error.
//
// client-go reads the discovery roots (/api, /apis) and /version with
// Result.Raw, which turns any error body that is not text into the word
// "unknown": there kubectl would print "Error from server (Forbidden):
// unknown" for the first command a user runs. On those paths, for the codes
// whose text client-go shows (403, 500, 502; for 401 and 503 it prints
// fixed words whatever the body), the message goes as text/plain instead.
func Write(w http.ResponseWriter, r *http.Request, code int, message string) {
	if r != nil && readRaw(r.URL.Path) && textShown(code) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if code == http.StatusUnauthorized {
			w.Header().Set("Www-Authenticate", `Bearer realm="clusterconnect"`)
		}
		w.WriteHeader(code)
		w.Write([]byte(message + "\n"))
		return
	}
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

// readRaw reports whether client-go reads this path's errors as raw bytes:
// the discovery roots and /version, also under a cluster prefix
// (/clusters/{id}/api).
func readRaw(path string) bool {
	path = strings.TrimSuffix(path, "/")
	return strings.HasSuffix(path, "/api") || strings.HasSuffix(path, "/apis") || strings.HasSuffix(path, "/version")
}

// textShown reports whether client-go shows a text error body's words for
// this status code (apimachinery's NewGenericServerResponse).
func textShown(code int) bool {
	return code == http.StatusForbidden || code == http.StatusInternalServerError || code == http.StatusBadGateway
}
