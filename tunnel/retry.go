package tunnel

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
)

// The retry rule, one for tunnel connections and for the peer hop: a
// request that cannot have done anything yet — no body, an idempotent
// method — may go once more, to another connection or replica, when an
// attempt fails before the client has seen any of its answer. A small
// answer to such a request is read whole before the client sees it, so
// that a connection dying mid-answer fails the attempt rather than the
// client.

// attempt applies the retry rule to one request.
type attempt struct {
	req       *http.Request
	retryable bool
}

func newAttempt(req *http.Request) attempt {
	return attempt{req: req, retryable: req.Body == nil && idempotent(req.Method)}
}

// result is an attempt's outcome as the client may see it: a small
// answer to a retryable request is read whole first.
func (a attempt) result(resp *http.Response, err error) (*http.Response, error) {
	if err != nil || !a.retryable {
		return resp, err
	}
	return whole(resp)
}

// again reports whether an attempt that ended with err may be made once
// more elsewhere.
func (a attempt) again(err error) bool {
	return err != nil && a.retryable && a.req.Context().Err() == nil
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// smallBody is the largest answer the relay reads whole before passing it
// on, when the request may be sent again.
const smallBody = 16 << 10

// whole reads a small answer of known length before the client sees any
// of it: if its agent dies between the headers and the end of the body,
// the request can still go to another agent instead of the client getting
// a broken answer. Larger answers, and streams, go on as they come.
func whole(resp *http.Response) (*http.Response, error) {
	if resp.ContentLength < 0 || resp.ContentLength > smallBody {
		return resp, nil
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("tunnel: the answer broke off: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}
