package impersonate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterconnect/clusterconnect/tokens"
)

// deniedError is a nested impersonation the API server does not allow.
type deniedError struct{ msg string }

func (e *deniedError) Error() string { return e.msg }

// authorizeNested checks, with one SubjectAccessReview per requested
// attribute (as the API server's own impersonation filter does), that id may
// impersonate what the request's Impersonate-* headers ask for, and returns
// that identity.
func (h *Handler) authorizeNested(ctx context.Context, id *tokens.Identity, hdr http.Header) (*tokens.Identity, error) {
	want := &tokens.Identity{
		Username: hdr.Get(authenticationv1.ImpersonateUserHeader),
		UID:      hdr.Get(authenticationv1.ImpersonateUIDHeader),
		Groups:   hdr.Values(authenticationv1.ImpersonateGroupHeader),
	}
	for k, vs := range hdr {
		if rest, ok := cutPrefixFold(k, authenticationv1.ImpersonateUserExtraHeaderPrefix); ok {
			key, err := url.PathUnescape(rest)
			if err != nil {
				return nil, &deniedError{fmt.Sprintf("impersonate: extra key %q is not escaped correctly", rest)}
			}
			if want.Extra == nil {
				want.Extra = map[string][]string{}
			}
			want.Extra[strings.ToLower(key)] = vs
		}
	}
	if want.Username == "" {
		return nil, &deniedError{"impersonate: Impersonate-Group, -Uid and -Extra need Impersonate-User"}
	}
	type check struct{ namespace, resource, subresource, name string }
	checks := []check{{"", "users", "", want.Username}}
	if parts := strings.SplitN(want.Username, ":", 4); len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount" {
		checks[0] = check{parts[2], "serviceaccounts", "", parts[3]}
	}
	for _, g := range want.Groups {
		checks = append(checks, check{"", "groups", "", g})
	}
	if want.UID != "" {
		checks = append(checks, check{"", "uids", "", want.UID})
	}
	for k, vs := range want.Extra {
		for _, v := range vs {
			checks = append(checks, check{"", "userextras", k, v})
		}
	}
	for _, c := range checks {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: id.Username, UID: id.UID, Groups: id.Groups, Extra: toExtra(id.Extra),
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: "impersonate", Namespace: c.namespace, Resource: c.resource, Subresource: c.subresource, Name: c.name,
			},
		}}
		if c.resource == "userextras" || c.resource == "uids" {
			sar.Spec.ResourceAttributes.Group = "authentication.k8s.io"
		}
		res, err := h.sar.Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("SubjectAccessReview: %w", err)
		}
		if !res.Status.Allowed {
			return nil, &deniedError{fmt.Sprintf("%s is not allowed to impersonate %s %q", id.Username, strings.TrimSuffix(c.resource, "s"), c.name)}
		}
	}
	return want, nil
}

func toExtra(m map[string][]string) map[string]authorizationv1.ExtraValue {
	out := make(map[string]authorizationv1.ExtraValue, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return "", false
}

// resolvesGroups reports whether tok's groups come from the mapping's
// GroupResolver, and so may change while a request made with it runs.
func (h *Handler) resolvesGroups(tok *tokens.Token) bool {
	_, overage := tok.GroupsOverage()
	return overage && h.mapping.GroupResolver != nil
}

// recheck decides again, every h.recheckEvery while r runs, what can change
// while it does — the groups resolved for tok, whether caller may still
// impersonate what r asks for (nested) — and ends r when caller lost a
// group or the right: the request's context is canceled, which ends the
// request to the API server (a watch's stream, an upgrade's connection).
// A check that fails for another reason (the API server or Graph
// unreachable) ends nothing: the next one asks again.
func (h *Handler) recheck(r *http.Request, tok *tokens.Token, caller *tokens.Identity, nested bool) *http.Request {
	ctx, cancel := context.WithCancelCause(r.Context())
	hdr := impersonationHeaders(r.Header)
	groups := h.resolvesGroups(tok)
	go func() {
		t := time.NewTicker(h.recheckEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now := caller
			if groups {
				id, err := h.mapping.Identity(ctx, tok)
				if err != nil {
					continue
				}
				if lost := lostGroup(caller, id); lost != "" {
					h.log.Info("session ended: the caller is no longer in a group it was made with", "user", caller.Username, "group", lost)
					cancel(&sessionEnded{fmt.Sprintf("%s is no longer in group %q, which this session was opened with; the session was ended", caller.Username, lost)})
					return
				}
				now = id
			}
			if !nested {
				continue
			}
			_, err := h.authorizeNested(ctx, now, hdr)
			var denied *deniedError
			if errors.As(err, &denied) {
				h.log.Info("session ended: the caller may no longer impersonate whom it asked for", "user", caller.Username, "reason", denied.Error())
				cancel(&sessionEnded{denied.Error() + " any longer; the session was ended"})
				return
			}
		}
	}()
	return r.WithContext(ctx)
}

// lostGroup is a group of was that is not among now's, or "".
func lostGroup(was, now *tokens.Identity) string {
	have := make(map[string]bool, len(now.Groups))
	for _, g := range now.Groups {
		have[g] = true
	}
	for _, g := range was.Groups {
		if !have[g] {
			return g
		}
	}
	return ""
}

// sessionEnded is why the handler ended a session: the cause of its
// request's context.
type sessionEnded struct{ msg string }

func (e *sessionEnded) Error() string { return "impersonate: " + e.msg }

// HTTPStatus and ClientMessage say how a client is told: an exec or
// attach ends with them on its error stream (sessions.EndInWords).
func (e *sessionEnded) HTTPStatus() int       { return http.StatusForbidden }
func (e *sessionEnded) ClientMessage() string { return e.msg }
