package httpx

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// HeaderAuditID carries a request's ID along the chain. kube-apiserver
// takes it as the audit ID of the request it receives ("set by the first
// server to receive the request") and answers it back on most responses,
// so the relay's, the agent's and the API server's records of one request
// share it.
const HeaderAuditID = "Audit-Id"

// NewRequestID returns a random version 4 UUID, the form kube-apiserver
// gives the audit IDs it makes itself.
func NewRequestID() string {
	var s [36]byte
	FillRequestID(&s)
	return string(s[:])
}

// FillRequestID writes a new request ID (as NewRequestID's) into s, for a
// caller that keeps it without another allocation.
func FillRequestID(s *[36]byte) {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
}

// MaxRequestIDLen bounds a request ID taken from a header.
const MaxRequestIDLen = 128

// RequestID returns the request ID h carries if it is one an ID may be:
// one value of 1 to MaxRequestIDLen letters, digits and "-_.:". Anything
// else, which would let a caller write what it likes into audit records,
// gives "".
func RequestID(h http.Header) string {
	vs := h[HeaderAuditID]
	if len(vs) != 1 || len(vs[0]) == 0 || len(vs[0]) > MaxRequestIDLen {
		return ""
	}
	for _, c := range []byte(vs[0]) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return ""
		}
	}
	return vs[0]
}

// SessionClass is the class of a long-lived request — "watch", "follow"
// (logs -f), "exec", "attach", "portforward", or "upgrade" for another
// upgrade — or "" for a request that is not one.
func SessionClass(r *http.Request) string {
	switch {
	case IsUpgrade(r.Header):
		p := r.URL.Path
		for _, c := range []string{"exec", "attach", "portforward"} {
			if strings.HasSuffix(p, "/"+c) {
				return c
			}
		}
		return "upgrade"
	case IsWatch(r):
		return "watch"
	case strings.Contains(r.URL.RawQuery, "follow=") && r.URL.Query().Get("follow") == "true":
		return "follow"
	}
	return ""
}

// IsWatch reports whether req asks the API server for a watch: watch=true
// (or 1) in the query, or the old paths with watch after the version
// (/api/v1/watch/…, /apis/{group}/{version}/watch/…), also under a
// relay's /clusters/{id} prefix.
func IsWatch(req *http.Request) bool {
	if strings.Contains(req.URL.RawQuery, "watch=") {
		switch req.URL.Query().Get("watch") {
		case "true", "1":
			return true
		}
	}
	if !strings.Contains(req.URL.Path, "/watch/") {
		return false // most requests: decided without a copy
	}
	segs := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if len(segs) >= 2 && segs[0] == "clusters" {
		segs = segs[2:]
	}
	switch {
	case len(segs) >= 3 && segs[0] == "api":
		return segs[2] == "watch"
	case len(segs) >= 4 && segs[0] == "apis":
		return segs[3] == "watch"
	}
	return false
}
