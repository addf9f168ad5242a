// Package impersonate is the token-to-impersonation http.Handler that sits in
// front of a kube-apiserver: it validates the caller's bearer token, strips
// every client-sent credential and Impersonate-* header, and forwards the
// request with its own credentials and Kubernetes user impersonation.
//
// The package is being built: its API is not yet available.
package impersonate
