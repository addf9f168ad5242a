package tokens_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/clusterconnect/clusterconnect/tokens"
)

func TestClaimsMeanOneThing(t *testing.T) {
	for _, tt := range []struct {
		name          string
		tok           tokens.Token
		objectID, app string
		overage       bool
		overageSource string
	}{
		{name: "a user", tok: tokens.Token{Subject: "s", Claims: map[string]any{"oid": "o", "appid": "cli", "groups": []any{"g"}}},
			objectID: "o", app: "cli"},
		{name: "v2 and no oid", tok: tokens.Token{Subject: "s", Claims: map[string]any{"azp": "cli2"}}, objectID: "s", app: "cli2"},
		{name: "overage in an access token", tok: tokens.Token{Claims: map[string]any{
			"_claim_names":   map[string]any{"groups": "src1"},
			"_claim_sources": map[string]any{"src1": map[string]any{"endpoint": "https://graph.example/x"}}}},
			overage: true, overageSource: "https://graph.example/x"},
		{name: "overage from the implicit flow", tok: tokens.Token{Claims: map[string]any{"hasgroups": true}}, overage: true},
		{name: "another claim's pointer", tok: tokens.Token{Claims: map[string]any{"_claim_names": map[string]any{"roles": "src1"}}}},
		{name: "hasgroups false", tok: tokens.Token{Claims: map[string]any{"hasgroups": false}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.objectID, tt.tok.ObjectID())
			assert.Equal(t, tt.app, tt.tok.AppID())
			src, overage := tt.tok.GroupsOverage()
			assert.Equal(t, tt.overage, overage)
			assert.Equal(t, tt.overageSource, src)
		})
	}
}

func TestIsForeign(t *testing.T) {
	for err, want := range map[error]bool{
		tokens.ErrIssuer: true, tokens.ErrAudience: true, tokens.ErrMalformed: true,
		fmt.Errorf("wrapped: %w", tokens.ErrAudience): true,
		tokens.ErrExpired: false, tokens.ErrSignature: false, tokens.ErrKeySet: false,
	} {
		assert.Equal(t, want, tokens.IsForeign(err), "%v", err)
	}
}

// A caller is the same in every token of theirs, and no one else's.
func TestCaller(t *testing.T) {
	user := func(iss, tid, oid, jti string) *tokens.Token {
		return &tokens.Token{Issuer: iss, TenantID: tid, Subject: "pairwise-" + jti, Claims: map[string]any{"oid": oid, "jti": jti}}
	}
	alice := user("https://iss/t1", "t1", "alice", "1")
	assert.Equal(t, alice.Caller(), user("https://iss/t1", "t1", "alice", "2").Caller(), "a renewed token")
	assert.NotEqual(t, alice.Caller(), user("https://iss/t1", "t1", "bob", "1").Caller(), "another user")
	assert.NotEqual(t, alice.Caller(), user("https://iss/t2", "t2", "alice", "1").Caller(), "another tenant")
	assert.NotEqual(t, alice.Caller(), tokens.UnverifiedCaller("raw"), "a token passed through")
	assert.NotEqual(t, tokens.UnverifiedCaller("a"), tokens.UnverifiedCaller("b"))
}
