package sessions

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// Watches returns middleware that ends a watch whose stream breaks — its
// tunnel connection lost, its agent gone, the relay stopping — with a
// final ERROR event carrying a Status that says why, instead of a stream
// that merely stops: kubectl prints it, and a reflector watches again
// from the last resourceVersion it saw. Events pass through as they come;
// the only bytes held back are those of an event not yet complete, so
// that the ERROR event never lands in the middle of one (which the
// client then never sees: it was cut off anyway). JSON and protobuf watch
// streams are ended so; other requests and other encodings pass
// untouched. Use it as tunnel.RelayConfig.Middleware.
func Watches(next http.RoundTripper) http.RoundTripper { return &watches{next: next} }

type watches struct{ next http.RoundTripper }

func (w *watches) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := w.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK || !IsWatch(req) {
		return resp, err
	}
	f := framingOf(resp.Header.Get("Content-Type"))
	if f == nil {
		return resp, nil
	}
	resp.Body = &watchBody{rc: resp.Body, events: f}
	return resp, nil
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

// framing tells where a watch stream's events end.
type framing interface {
	// complete returns how many of the bytes, which follow the last
	// complete event, are complete events themselves.
	complete(b []byte) int
	// errorEvent is the final ERROR event, framed, with a Status of code
	// and reason saying msg.
	errorEvent(code int, reason, msg string) []byte
}

// framingOf is the framing of a watch answer of content type ct; nil for
// encodings it does not know.
func framingOf(ct string) framing {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil
	}
	switch mt {
	case "application/json":
		return &jsonFraming{}
	case "application/vnd.kubernetes.protobuf":
		return &protoFraming{}
	}
	return nil
}

// watchBody passes a watch's events through, holding back only the bytes
// of an event still arriving, and ends a broken stream with an ERROR
// event.
type watchBody struct {
	rc     io.ReadCloser
	events framing
	held   []byte // the start of an event not yet complete
	out    []byte // bytes to give before reading more: complete events, or the ERROR event
	ended  bool   // the stream is over: out is the last of it
}

func (b *watchBody) Read(p []byte) (int, error) {
	for {
		if len(b.out) > 0 {
			n := copy(p, b.out)
			b.out = b.out[n:]
			return n, nil
		}
		if b.ended {
			return 0, io.EOF
		}
		n, err := b.rc.Read(p)
		if n > 0 {
			if len(b.held) == 0 {
				// The common case: no event in progress before.
				done := b.events.complete(p[:n])
				if done < n {
					b.held = append(b.held, p[done:n]...)
				}
				if done > 0 {
					return done, nil
				}
			} else {
				b.held = append(b.held, p[:n]...)
				done := b.events.complete(b.held)
				b.out = append(b.out[:0], b.held[:done]...)
				b.held = append(b.held[:0], b.held[done:]...)
			}
		}
		switch {
		case err == nil:
		case err == io.EOF: // itself: a broken stream's error may wrap one
			b.out, b.held, b.ended = append(b.out, b.held...), nil, true
		default:
			// The event in progress never reached the client: drop it.
			b.held, b.ended = nil, true
			b.out = append(b.out, b.events.errorEvent(http.StatusServiceUnavailable, "ServiceUnavailable",
				fmt.Sprintf("the watch's connection to the cluster broke (%v); watch again", err))...)
		}
	}
}

func (b *watchBody) Close() error { return b.rc.Close() }
