package clientproxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"strings"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// StepUpper is a TokenSource that can sign the user in again to meet a
// claims challenge (login.Options' sources for a person are). The proxy
// then answers a relay's 401 with error="insufficient_claims" itself:
// it signs in again with the challenge's claims and sends the request
// once more, so kubectl never sees the challenge when the sign-in
// succeeds.
type StepUpper interface {
	StepUp(ctx context.Context, claims string) (*oauth2.Token, error)
}

// maxReplayBody is the largest request body the proxy keeps to send again
// after a step-up: a Secret or a manifest, not an upload.
const maxReplayBody = 1 << 20

// stepUpTransport sends a request again, once, after meeting a claims
// challenge the relay answered it with.
type stepUpTransport struct {
	next http.RoundTripper
	p    *Proxy
}

func (t *stepUpTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	su, ok := t.p.cfg.TokenSource.(StepUpper)
	if !ok || t.p.cfg.PassClientToken {
		return t.next.RoundTrip(req)
	}
	req, replayable := keepBody(req)
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !replayable {
		return resp, err
	}
	claims, ok := claimsChallenge(resp.Header.Values("Www-Authenticate"))
	if !ok {
		return resp, nil
	}
	tok, err := su.StepUp(req.Context(), claims)
	if err != nil {
		t.p.log.Warn("the relay asks for a stronger sign-in, and it failed", "path", req.URL.Path, "err", err)
		return resp, nil // kubectl reads the relay's words
	}
	t.p.log.Info("signed in again for a stronger sign-in the relay asked for", "path", req.URL.Path)
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		if again.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	again.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	return t.next.RoundTrip(again)
}

// keepBody makes req's body readable again, if it has one of a known size
// small enough to keep; replayable is false for a body that cannot be
// sent twice.
func keepBody(req *http.Request) (_ *http.Request, replayable bool) {
	if !httpx.HasBody(req) || req.GetBody != nil {
		return req, true
	}
	if req.ContentLength < 0 || req.ContentLength > maxReplayBody {
		return req, false
	}
	b, err := io.ReadAll(io.LimitReader(req.Body, req.ContentLength))
	req.Body.Close()
	if err != nil {
		req.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), errReader{err}))
		return req, false
	}
	req = req.Clone(req.Context())
	req.Body = io.NopCloser(bytes.NewReader(b))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	return req, true
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// claimsChallenge reads the claims of a Bearer challenge with
// error="insufficient_claims" (base64, as Entra's protocol sends them;
// also taken as they are, if they are JSON already).
func claimsChallenge(challenges []string) (string, bool) {
	for _, c := range challenges {
		scheme, params, _ := strings.Cut(c, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			continue
		}
		p := authParams(params)
		if p["error"] != "insufficient_claims" || p["claims"] == "" {
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(p["claims"]); err == nil {
			return string(b), true
		}
		if strings.HasPrefix(p["claims"], "{") {
			return p["claims"], true
		}
	}
	return "", false
}

// authParams reads a challenge's auth-params (RFC 9110 section 11.2):
// name=token or name="quoted string", comma-separated.
func authParams(s string) map[string]string {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimLeft(strings.TrimSpace(s), ",") {
		name, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		name, rest = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(rest)
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			val, s = b.String(), rest[min(i+1, len(rest)):]
		} else {
			val, s, _ = strings.Cut(rest, ",")
			val = strings.TrimSpace(val)
		}
		out[name] = val
		s = strings.TrimSpace(s)
	}
	return out
}
