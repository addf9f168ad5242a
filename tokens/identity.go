package tokens

import (
	"context"
	"fmt"
	"strings"
)

// Identity is who a token says the caller is, in Kubernetes terms: what the
// impersonation headers carry.
type Identity struct {
	Username string
	UID      string
	Groups   []string
	Extra    map[string][]string
	// App is true for app-only tokens (a service principal or managed
	// identity acting as itself, not for a user).
	App bool
}

// GroupResolver looks up the groups of a token whose groups did not fit in
// it (Entra ID's groups overage), for example through Microsoft Graph.
type GroupResolver interface {
	ResolveGroups(ctx context.Context, tok *Token) ([]string, error)
}

// Mapping turns verified claims into an Identity.
type Mapping struct {
	// UsernameClaims are tried in order; the first present, non-empty one
	// is the username. Default: sub.
	UsernameClaims []string
	// AppUsernameClaim names app-only tokens' username; default oid, as
	// Azure Arc binds service principals by object ID.
	AppUsernameClaim string
	// UsernamePrefix is prepended to the username, e.g. "aad:".
	UsernamePrefix string
	// UIDClaim is the stable user ID for Impersonate-Uid; default none.
	UIDClaim string
	// GroupsClaims hold lists of group names or IDs; default groups.
	GroupsClaims []string
	// GroupsPrefix is prepended to every group.
	GroupsPrefix string
	// ExtraClaims maps claim names to the Extra keys they fill.
	ExtraClaims map[string]string
	// AllowReservedNames lets usernames and groups start with "system:".
	// Tokens from an outside issuer MUST NOT be able to claim Kubernetes'
	// own identities; leave it false unless the issuer is the cluster's.
	AllowReservedNames bool
	// OverageWithoutGroups admits a token whose groups overflowed and
	// could not be resolved (no GroupResolver, or it failed) with no
	// groups at all, instead of refusing it. Kubernetes RBAC only grants,
	// so the caller gets less, never more; but a user who needs a group is
	// then refused by RBAC, in less telling words.
	OverageWithoutGroups bool
	// GroupResolver resolves groups overage; without one, such tokens are
	// refused with a GroupsOverageError.
	GroupResolver GroupResolver
}

// EntraMapping is the mapping for Entra ID that Azure Arc cluster connect
// uses: users by UPN, falling back to the object ID for guests and service
// principals; groups by object ID (and app roles by name); oid and tid kept
// as extras.
func EntraMapping() Mapping {
	return Mapping{
		UsernameClaims: []string{"upn", "oid"},
		UIDClaim:       "oid",
		GroupsClaims:   []string{"groups", "roles"},
		ExtraClaims: map[string]string{
			"oid": "clusterconnect.io/oid",
			"tid": "clusterconnect.io/tid",
		},
	}
}

// Identity maps a verified token.
func (m *Mapping) Identity(ctx context.Context, tok *Token) (*Identity, error) {
	id := &Identity{App: isAppOnly(tok)}
	if id.App {
		claim := m.AppUsernameClaim
		if claim == "" {
			claim = "oid"
		}
		id.Username = tok.StringClaim(claim)
	} else {
		claims := m.UsernameClaims
		if len(claims) == 0 {
			claims = []string{"sub"}
		}
		for _, c := range claims {
			if id.Username = tok.StringClaim(c); id.Username != "" {
				break
			}
		}
	}
	if id.Username == "" {
		return nil, claimError(ErrMissingClaim, "no username claim (%s) in the token", strings.Join(m.UsernameClaims, ", "))
	}
	id.Username = m.UsernamePrefix + id.Username
	if m.UIDClaim != "" {
		id.UID = tok.StringClaim(m.UIDClaim)
	}

	groups, err := m.groups(ctx, tok)
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		id.Groups = append(id.Groups, m.GroupsPrefix+g)
	}
	for claim, key := range m.ExtraClaims {
		if v := claimStrings(tok.Claims[claim]); len(v) > 0 {
			if id.Extra == nil {
				id.Extra = map[string][]string{}
			}
			id.Extra[key] = v
		}
	}
	if !m.AllowReservedNames {
		if reserved(id.Username) {
			return nil, claimError(ErrReservedName, "username %q is reserved for Kubernetes", truncate(id.Username))
		}
		for _, g := range id.Groups {
			if reserved(g) {
				return nil, claimError(ErrReservedName, "group %q is reserved for Kubernetes", truncate(g))
			}
		}
	}
	return id, nil
}

func (m *Mapping) groups(ctx context.Context, tok *Token) ([]string, error) {
	if src, overage := tok.GroupsOverage(); overage {
		if m.GroupResolver == nil {
			if m.OverageWithoutGroups {
				return nil, nil
			}
			return nil, &GroupsOverageError{Source: src}
		}
		groups, err := m.GroupResolver.ResolveGroups(ctx, tok)
		if err != nil {
			if m.OverageWithoutGroups {
				return nil, nil
			}
			return nil, fmt.Errorf("%w: resolving groups: %v", ErrGroupsOverage, err)
		}
		return groups, nil
	}
	claims := m.GroupsClaims
	if claims == nil {
		claims = []string{"groups"}
	}
	var out []string
	for _, c := range claims {
		out = append(out, claimStrings(tok.Claims[c])...)
	}
	return out, nil
}

// isAppOnly recognises an app-only token: idtyp=app when the tenant emits
// it, otherwise a token with roles but no delegated scope whose subject is
// its own object ID.
func isAppOnly(tok *Token) bool {
	if t := tok.StringClaim("idtyp"); t != "" {
		return t == "app"
	}
	oid := tok.StringClaim("oid")
	return oid != "" && oid == tok.Subject && tok.Claims["scp"] == nil && tok.StringClaim("upn") == ""
}

func claimStrings(v any) []string {
	switch v := v.(type) {
	case string:
		if v != "" {
			return []string{v}
		}
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			if s, ok := x.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func reserved(name string) bool { return strings.HasPrefix(name, "system:") }
