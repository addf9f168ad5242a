package access

import (
	"net/http"
	"strings"
)

// APIRequest is what a request to a cluster asks of its API server, read
// from its method and path the way kube-apiserver's request info resolver
// reads them: enough for the relay to tell an exec from a get, or a write
// to a Secret from a read of a ConfigMap.
type APIRequest struct {
	// Resource is the resource ("pods", "secrets"), with its group after a
	// dot for a named group ("deployments.apps"); "" for a request that
	// is not for a resource (discovery, /version, /healthz).
	Resource string
	// Subresource is the part after the object's name ("exec", "attach",
	// "portforward", "log", "status"); "" for the object itself.
	Subresource string
	// Verb is Kubernetes' verb: get, list, watch, create, update, patch,
	// delete or deletecollection.
	Verb string
	// Namespace, "" for cluster-scoped resources.
	Namespace string
}

// ParseAPIRequest reads a request's path (below any /clusters/{id} prefix
// the relay routes on), its method and its query. A path that is not an
// API request gives an APIRequest with no Resource: nothing of it is a
// resource, so no rule about resources covers it. ok is false for a path
// with empty, "." or ".." segments, which kube-apiserver would not read
// as this function does: a rule must not be passed by spelling a path
// another way.
func ParseAPIRequest(method, path string, query func(string) string) (r APIRequest, ok bool) {
	if rest, ok := strings.CutPrefix(path, "/clusters/"); ok {
		_, path, _ = strings.Cut(rest, "/")
	}
	rest := strings.TrimPrefix(strings.TrimSuffix(path, "/"), "/")
	if rest == "" {
		return APIRequest{}, true
	}
	// Segments into an array on the stack: this runs for every request to
	// a cluster with stepUp rules (see BenchmarkAuthorize).
	var buf [16]string
	parts := buf[:0]
	for {
		seg, more, found := strings.Cut(rest, "/")
		if seg == "" || seg == "." || seg == ".." {
			return APIRequest{}, false
		}
		parts = append(parts, seg)
		if !found {
			break
		}
		rest = more
	}
	r, ok = parseParts(method, parts, query), true
	return r, ok
}

func parseParts(method string, parts []string, query func(string) string) APIRequest {
	var group string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:] // api/v1
	case len(parts) >= 3 && parts[0] == "apis":
		group, parts = parts[1], parts[3:] // apis/{group}/{version}
	default:
		return APIRequest{}
	}
	var r APIRequest
	watch := false
	if len(parts) > 0 && parts[0] == "watch" { // the deprecated /watch/ paths
		watch, parts = true, parts[1:]
	}
	// namespaces/{ns}/{resource}…, but namespaces/{name}[/status|/finalize]
	// is the Namespace object itself.
	if len(parts) >= 3 && parts[0] == "namespaces" && parts[2] != "status" && parts[2] != "finalize" {
		r.Namespace, parts = parts[1], parts[2:]
	} else if len(parts) >= 2 && parts[0] == "namespaces" {
		r.Namespace = parts[1]
	}
	if len(parts) == 0 {
		return APIRequest{}
	}
	r.Resource = parts[0]
	if group != "" {
		r.Resource += "." + group
	}
	named := len(parts) >= 2
	if len(parts) >= 3 {
		r.Subresource = parts[2]
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		switch {
		case watch || (query != nil && (query("watch") == "true" || query("watch") == "1")):
			r.Verb = "watch"
		case named:
			r.Verb = "get"
		default:
			r.Verb = "list"
		}
	case http.MethodPost:
		r.Verb = "create"
	case http.MethodPut:
		r.Verb = "update"
	case http.MethodPatch:
		r.Verb = "patch"
	case http.MethodDelete:
		r.Verb = "delete"
		if !named {
			r.Verb = "deletecollection"
		}
	default:
		r.Verb = strings.ToLower(method)
	}
	return r
}
