package tunnel

import (
	"encoding/json"
	"net/http"
)

// status is the body of a Kubernetes-style error (a meta/v1 Status), so that
// kubectl and client-go print the message instead of a raw body. The tunnel
// does not import Kubernetes: the shape is small and stable.
type status struct {
	Kind       string         `json:"kind"`
	APIVersion string         `json:"apiVersion"`
	Metadata   struct{}       `json:"metadata"`
	Status     string         `json:"status"`
	Message    string         `json:"message"`
	Reason     string         `json:"reason"`
	Details    *statusDetails `json:"details,omitempty"`
	Code       int            `json:"code"`
}

type statusDetails struct {
	Name              string `json:"name,omitempty"`
	RetryAfterSeconds int    `json:"retryAfterSeconds,omitempty"`
}

// reasons for the codes the tunnel answers with, as Kubernetes names them.
var statusReasons = map[int]string{
	http.StatusBadRequest:       "BadRequest",
	http.StatusUnauthorized:     "Unauthorized",
	http.StatusForbidden:        "Forbidden",
	http.StatusNotFound:         "NotFound",
	http.StatusMethodNotAllowed: "MethodNotAllowed",
	http.StatusUpgradeRequired:  "BadRequest",
	// Kubernetes has no reason of its own for 431.
	http.StatusRequestHeaderFieldsTooLarge: "BadRequest",
	http.StatusInternalServerError:         "InternalError",
	http.StatusBadGateway:                  "InternalError",
	http.StatusServiceUnavailable:          "ServiceUnavailable",
	http.StatusGatewayTimeout:              "Timeout",
}

// writeStatus answers with a Kubernetes-style Status. cluster, if not empty,
// names the cluster in the details.
func writeStatus(w http.ResponseWriter, code int, cluster, message string) {
	s := status{Kind: "Status", APIVersion: "v1", Status: "Failure", Message: message, Reason: statusReasons[code], Code: code}
	if s.Reason == "" {
		s.Reason = "Unknown"
	}
	if cluster != "" || code == http.StatusServiceUnavailable {
		s.Details = &statusDetails{Name: cluster}
	}
	if code == http.StatusServiceUnavailable {
		s.Details.RetryAfterSeconds = 1
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(s)
}
