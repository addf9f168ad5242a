package h2client

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// Requests as header lists: what the relay's client sends in HEADERS.

// requestBody is the body the relay's client sends, nil for none.
func requestBody(req *http.Request) io.ReadCloser {
	if req.Body == http.NoBody {
		return nil
	}
	return req.Body
}

// bodyLength is the length of req's body to send: 0 without one, -1 when
// unknown.
func bodyLength(req *http.Request) int64 {
	switch {
	case requestBody(req) == nil:
		return 0
	case req.ContentLength == 0:
		return -1
	}
	return req.ContentLength
}

// headerList is a request's header fields as HTTP/2 sends them.
type HeaderList []hpack.HeaderField

// requestFields is req's header list as HTTP/2 sends it.
func RequestFields(req *http.Request) (HeaderList, error) {
	contentLength := bodyLength(req)
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return nil, fmt.Errorf("tunnel: invalid Host %q", host)
	}
	if !httpguts.ValidHeaderFieldName(req.Method) { // a token, as a field name is
		return nil, fmt.Errorf("tunnel: invalid method %q", req.Method)
	}
	fields := make([]hpack.HeaderField, 0, 5+len(req.Header))
	fields = append(fields, hpack.HeaderField{Name: ":authority", Value: host}, hpack.HeaderField{Name: ":method", Value: req.Method})
	if req.Method != http.MethodConnect {
		path := req.URL.RequestURI()
		if path == "" {
			path = "/"
		}
		fields = append(fields, hpack.HeaderField{Name: ":path", Value: path}, hpack.HeaderField{Name: ":scheme", Value: "https"})
	}
	for k, vs := range req.Header {
		name := lowerHeader(k)
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("tunnel: invalid header name %q", k)
		}
		switch name {
		case "host", "content-length", "connection", "proxy-connection", "transfer-encoding", "upgrade", "keep-alive":
			continue // HTTP/1.1's, or set below
		case "te":
			for _, v := range vs {
				if strings.EqualFold(v, "trailers") {
					fields = append(fields, hpack.HeaderField{Name: "te", Value: "trailers"})
					break
				}
			}
			continue
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("tunnel: invalid value of header %q", k)
			}
			fields = append(fields, hpack.HeaderField{Name: name, Value: v, Sensitive: neverIndexed(name)})
		}
	}
	if len(req.Trailer) > 0 {
		names := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			if !httpguts.ValidHeaderFieldName(k) {
				return nil, fmt.Errorf("tunnel: invalid trailer name %q", k)
			}
			names = append(names, lowerHeader(k))
		}
		slices.Sort(names)
		fields = append(fields, hpack.HeaderField{Name: "trailer", Value: strings.Join(names, ",")})
	}
	if contentLength > 0 || (contentLength == 0 && bodyMethod(req.Method)) {
		fields = append(fields, hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(contentLength, 10)})
	}
	return fields, nil
}

// lowerHeaders are the lower-case names of common request headers, so
// that sending them allocates nothing.
var lowerHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Content-Type", "Content-Encoding", "Cookie", "If-Match", "If-None-Match", "If-Modified-Since", "Origin",
		"Referer", "User-Agent", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Remote-User",
		"X-Remote-Group", "Impersonate-User", "Impersonate-Group", "Impersonate-Uid", "Audit-Id", "Kubectl-Command",
		"Kubectl-Session", "X-Stream-Protocol-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Key",
		"Sec-Websocket-Version", "Traceparent", "Tracestate", "Baggage"} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

// neverIndexed reports whether a header's value is new in every request
// (a request ID, a trace context): indexed, each would evict from the
// HPACK table the fields that do repeat, and cost every later request.
func neverIndexed(name string) bool { return name == "audit-id" || name == "traceparent" }

func lowerHeader(k string) string {
	if v, ok := lowerHeaders[k]; ok {
		return v
	}
	return strings.ToLower(k)
}

// bodyMethod reports whether a request of this method says
// Content-Length: 0 for an empty body, as net/http does.
func bodyMethod(m string) bool {
	return m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch
}

// fieldsSize is a header list's size as SETTINGS_MAX_HEADER_LIST_SIZE
// counts it.
func FieldsSize(fields HeaderList) uint64 {
	var n uint64
	for _, f := range fields {
		n += uint64(f.Size())
	}
	return n
}

// ErrHeadersTooLarge is tunnel.ErrHeadersTooLarge: a header list over
// what the other side accepts.
var ErrHeadersTooLarge = errors.New("tunnel: request header list too large for the tunnel")
