package sessions

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// DefaultResumeWithin is how long a broken watch keeps trying to resume
// before it ends: an agent that lost its relay is back within its
// backoff, at most 30 s.
const DefaultResumeWithin = 30 * time.Second

// Watches returns middleware that keeps a watch going when its stream
// breaks under it — its tunnel connection lost, its agent gone, the relay
// replica it went through gone — and ends it saying why when it cannot.
//
// A watch that names the resourceVersion it starts from is resumed: the
// same request again, from the resourceVersion of the last event its
// client got whole, on whatever connection the cluster has then, and the
// client reads one unbroken stream, no event lost or repeated. A watch
// with sendInitialEvents=true resumes once its initial events have ended
// (their BOOKMARK). A watch without a resourceVersion begins with
// synthetic events in no order, so it is not resumed; nor is one past
// DefaultResumeWithin, or one the API server answers otherwise than with
// a watch (410 Gone, say). Those end with a final ERROR event whose
// Status says why: kubectl prints it, a reflector relists or watches
// again.
//
// Events pass through as they come; the only bytes held back are those
// of an event not yet complete, so that neither a resumed stream nor an
// ERROR event lands in the middle of one. JSON (tables too) and protobuf
// watch streams are kept so; other requests and encodings pass
// untouched. Use it as tunnel.RelayConfig.Middleware, and around a client
// proxy's transport.
func Watches(next http.RoundTripper) http.RoundTripper {
	return &watches{next: next, within: DefaultResumeWithin, every: 250 * time.Millisecond}
}

type watches struct {
	next          http.RoundTripper
	within, every time.Duration // how long to try resuming, and how often
}

func (w *watches) RoundTrip(req *http.Request) (*http.Response, error) {
	if !IsWatch(req) {
		return w.next.RoundTrip(req)
	}
	if _, ok := req.Header["Accept-Encoding"]; ok {
		// Events are found in the stream's bytes, so ask for them as
		// they are: the API server compresses a watch that begins with
		// its initial events (sendInitialEvents=true, what client-go's
		// informers send by default) when the client accepts gzip,
		// and no event would ever be seen whole. Go's transport, in
		// kubectl and client-go, asks for gzip unless told not to and
		// reads either.
		req = req.Clone(req.Context())
		req.Header.Del("Accept-Encoding")
	}
	resp, err := w.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return resp, nil // compressed all the same: passed on as it is
	}
	f := framingOf(resp.Header.Get("Content-Type"))
	if f == nil {
		return resp, nil
	}
	resp.Body = &watchBody{rc: resp.Body, events: f, w: w, req: req, from: startingPoint(req), ct: resp.Header.Get("Content-Type")}
	return resp, nil
}

// IsWatch reports whether req asks the API server for a watch: watch=true
// (or 1) in the query, or the old paths with watch after the version
// (/api/v1/watch/…, /apis/{group}/{version}/watch/…), also under a
// relay's /clusters/{id} prefix.
func IsWatch(req *http.Request) bool { return httpx.IsWatch(req) }

// framing tells where a watch stream's events end.
type framing interface {
	// complete returns how many of the bytes, which follow the last
	// complete event, are complete events themselves.
	complete(b []byte) int
	// errorEvent is the final ERROR event, framed, with a Status of code
	// and reason saying msg; resumable marks it as one a layer in front
	// may resume past.
	errorEvent(code int, reason, msg string, resumable bool) []byte
	// each calls fn with each event of b, which holds complete events
	// only, framed.
	each(b []byte, fn func(event []byte))
	// info reads what resuming needs of one framed event.
	info(event []byte) eventInfo
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

// maxHeld bounds the bytes of one event held back until its end comes:
// well above the largest object etcd stores (1.5 MiB) as JSON. A stream
// whose event runs past it is passed on as it comes, and no longer kept
// (not resumed, not ended with an ERROR event, which could land inside
// the long event).
const maxHeld = 8 << 20

// watchBody passes a watch's events through, holding back only the bytes
// of an event still arriving, resumes a broken stream where it can, and
// ends it with an ERROR event where it cannot.
type watchBody struct {
	rc     io.ReadCloser
	events framing
	w      *watches
	req    *http.Request
	ct     string     // the answer's content type, which a resumed one must have
	from   resumeFrom // where the watch would resume now
	broken time.Time  // when the stream broke, until an event comes again
	tried  time.Time  // when resume last asked for the watch again
	held   []byte     // the start of an event not yet complete
	out    []byte     // bytes to give before reading more: complete events, or the ERROR event
	ended  bool       // the stream is over: out is the last of it
	plain  bool       // an event ran past maxHeld: bytes pass as they come
	// pendingErr ended the read whose bytes the last Read gave: it is
	// the next one's.
	pendingErr error
	// behindBroke: the layer behind ended the watch with a resumable
	// ERROR event (its connection broke), which is dropped, and the
	// stream's end taken as a break.
	behindBroke bool
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
		if b.plain {
			return b.rc.Read(p)
		}
		var n int
		err := b.pendingErr
		if err != nil {
			b.pendingErr = nil
		} else {
			n, err = b.rc.Read(p)
		}
		if n > 0 {
			if done := b.take(p[:n]); done > 0 {
				b.pendingErr = err // for the next Read, after these bytes
				return done, nil
			}
			if len(b.held) > maxHeld {
				b.out, b.held, b.plain, b.ended = append(b.out, b.held...), nil, true, err != nil
				continue
			}
		}
		switch {
		case err == nil:
		case err == io.EOF && b.behindBroke:
			b.behindBroke = false
			if rc := b.resume(errBehindBroke); rc != nil {
				b.rc.Close()
				b.rc = rc
				continue
			}
			b.ended = true
		case err == io.EOF: // itself: a broken stream's error may wrap one
			b.out, b.held, b.ended = append(b.out, b.held...), nil, true
		default:
			// The event in progress never reached the client: drop it,
			// and get it again from where the client is.
			b.held = nil
			if rc := b.resume(err); rc != nil {
				b.rc.Close()
				b.rc = rc
				continue
			}
			b.ended = true
		}
	}
}

// take passes on the complete events among what was read into p: it
// returns how many of p's first bytes are to go as they are, or puts
// the complete events in b.out and returns 0; the start of an event not
// yet complete is held.
func (b *watchBody) take(p []byte) int {
	if len(b.held) == 0 {
		// The common case: no event in progress before.
		done := b.events.complete(p)
		b.held = append(b.held, p[done:]...)
		if done > 0 {
			if cut := b.track(p[:done]); cut < done {
				b.held = nil
				return cut
			}
		}
		return done
	}
	b.held = append(b.held, p...)
	done := b.events.complete(b.held)
	b.out = append(b.out[:0], b.held[:done]...)
	b.held = append(b.held[:0], b.held[done:]...)
	if done > 0 {
		if cut := b.track(b.out); cut < done {
			b.out, b.held = b.out[:cut], nil
		}
	}
	return 0
}

// resumeFrom is where a watch can resume: from a resourceVersion its
// client has all events up to, when that is known.
type resumeFrom struct {
	ok          bool // not before the initial events' end, with sendInitialEvents=true
	rv          string
	serverEnded bool // the API server sent an ERROR event: its word is the last
}

func startingPoint(req *http.Request) resumeFrom {
	q := req.URL.Query()
	if q.Get("sendInitialEvents") == "true" {
		return resumeFrom{} // ok once their end's BOOKMARK passes
	}
	rv := q.Get("resourceVersion")
	return resumeFrom{ok: rv != "" && rv != "0", rv: rv}
}

// track notes what the complete events in b say of where to resume. It
// returns where, in events, a resumable ERROR event of the layer behind
// begins, which is not passed on, or len(events).
func (b *watchBody) track(events []byte) (cut int) {
	b.broken = time.Time{} // events flow again
	var last []byte        // the latest resourceVersion to resume from
	cut = len(events)
	b.events.each(events, func(ev []byte) {
		if b.behindBroke {
			return // nothing follows it
		}
		info := b.events.info(ev)
		switch {
		case string(info.typ) == "ERROR" && b.from.ok && bytes.Contains(ev, []byte(causeResumable)):
			// The layer behind could not resume: try from here.
			b.behindBroke = true
			cut = cap(events) - cap(ev) // ev is a slice of events
		case string(info.typ) == "ERROR":
			b.from.ok, b.from.serverEnded, last = false, true, nil
		case info.initialEnd && !b.from.serverEnded:
			b.from.ok, last = len(info.resourceVersion) > 0, info.resourceVersion
		case b.from.ok && len(info.resourceVersion) > 0:
			last = info.resourceVersion
		}
	})
	if b.from.ok && last != nil {
		b.from.rv = string(last)
	}
	return cut
}

// resume asks for the watch again from where its client is, for up to
// the watches' window, and returns the new stream; or it puts the ERROR
// event that says why it cannot in b.out and returns nil.
func (b *watchBody) resume(broke error) io.ReadCloser {
	fail := func(code int, reason, msg string) io.ReadCloser {
		b.out = append(b.out, b.events.errorEvent(code, reason, msg, false)...)
		return nil
	}
	// broken: the connection broke and could not be resumed here; a
	// layer in front may still resume.
	broken := func(msg string) io.ReadCloser {
		b.out = append(b.out, b.events.errorEvent(http.StatusServiceUnavailable, "ServiceUnavailable", msg, true)...)
		return nil
	}
	if code, msg, ok := b.endedOnPurpose(); ok {
		// Ended on purpose (the caller's right to it ended): not resumed
		// here. A layer in front that can present a fresh credential
		// may, if the ending says so.
		if resumableByClient(context.Cause(b.req.Context())) {
			b.out = append(b.out, b.events.errorEvent(code, reasonOf(code), msg, true)...)
			return nil
		}
		return fail(code, reasonOf(code), msg)
	}
	why := fmt.Sprintf("the watch's connection to the cluster broke (%v)", broke)
	if !b.from.ok {
		return fail(http.StatusServiceUnavailable, "ServiceUnavailable", why+"; watch again")
	}
	ctx := b.req.Context()
	if b.broken.IsZero() {
		b.broken = time.Now()
	}
	deadline := b.broken.Add(b.w.within)
	last := broke // the latest failure, to say at the end
	for {
		// A resumed stream that breaks again before an event came waits
		// its turn too.
		if wait := b.w.every - time.Since(b.tried); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		if ctx.Err() != nil {
			return broken(why + "; watch again")
		}
		if !time.Now().Before(deadline) {
			return broken(fmt.Sprintf("%s and could not be resumed within %v (last: %v); watch again", why, b.w.within, last))
		}
		b.tried = time.Now()
		req := b.req.Clone(ctx)
		q := req.URL.Query()
		q.Set("resourceVersion", b.from.rv)
		q.Del("sendInitialEvents")
		q.Del("resourceVersionMatch")
		req.URL.RawQuery = q.Encode()
		resp, err := b.w.next.RoundTrip(req)
		switch {
		case err == nil && resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == b.ct:
			return resp.Body
		case err == nil && resp.StatusCode == http.StatusServiceUnavailable:
			// The cluster is not reachable yet (its agent reconnecting to
			// another replica): as a connection that fails, try again
			// within the window.
			last = fmt.Errorf("answered %s: %s", resp.Status, statusMessage(resp.Body))
			resp.Body.Close()
		case err == nil:
			answer := resp.Status
			if msg := statusMessage(resp.Body); msg != "" {
				answer += ": " + msg // the words a new request gets
			}
			resp.Body.Close()
			return fail(resp.StatusCode, reasonOf(resp.StatusCode),
				fmt.Sprintf("%s, and watching again from resourceVersion %s was answered %s; watch again", why, b.from.rv, answer))
		default:
			last = err
		}
	}
}

// resumableByClient reports whether err, which ended a request on
// purpose, lets a client that presents a fresh credential ask again
// (tunnel.AccessError.ClientMayResume).
func resumableByClient(err error) bool {
	var r interface{ ResumableByClient() bool }
	return errors.As(err, &r) && r.ResumableByClient()
}

// errBehindBroke is why a watch resumes after a resumable ERROR event.
var errBehindBroke = errors.New("the relay's own connection to the cluster broke and it could not resume")

// endedOnPurpose reports whether the watch's request was ended on
// purpose (tunnel.EndRequest: its caller's right to it ended), and the
// Status that says so.
func (b *watchBody) endedOnPurpose() (code int, msg string, ok bool) {
	if b.req == nil { // the framing's own tests
		return 0, "", false
	}
	return endedBy(context.Cause(b.req.Context()))
}

// statusMessage is the message of the Status a refusal's body holds, if
// it holds one.
func statusMessage(body io.Reader) string {
	var st struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	}
	b, _ := io.ReadAll(io.LimitReader(body, 16<<10))
	if json.Unmarshal(b, &st) != nil || st.Kind != "Status" {
		return ""
	}
	return st.Message
}

// reasonOf is the Status reason the API server gives for a code.
func reasonOf(code int) string {
	switch code {
	case http.StatusGone:
		return "Expired"
	case http.StatusUnauthorized:
		return "Unauthorized"
	case http.StatusForbidden:
		return "Forbidden"
	case http.StatusTooManyRequests:
		return "TooManyRequests"
	}
	return "ServiceUnavailable"
}

func (b *watchBody) Close() error { return b.rc.Close() }
