package clientproxy

import (
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestClaimsChallenge(t *testing.T) {
	claims := `{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`
	b64 := base64.StdEncoding.EncodeToString([]byte(claims))
	for _, tt := range []struct {
		name string
		in   []string
		want string
	}{
		{"Entra's form", []string{`Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="` + b64 + `"`}, claims},
		{"the relay's", []string{`Bearer realm="clusterconnect", error="insufficient_claims", claims="` + b64 + `"`}, claims},
		{"after another scheme", []string{`Basic realm="x"`, `bearer error=insufficient_claims, claims="` + b64 + `"`}, claims},
		{"claims as JSON, escaped", []string{`Bearer error="insufficient_claims", claims="{\"access_token\":{}}"`}, `{"access_token":{}}`},
		{"another error", []string{`Bearer error="invalid_token", claims="` + b64 + `"`}, ""},
		{"no claims", []string{`Bearer error="insufficient_claims"`}, ""},
		{"a plain challenge", []string{`Bearer realm="clusterconnect"`}, ""},
		{"nothing", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := claimsChallenge(tt.in)
			assert.Equal(t, tt.want != "", ok)
			assert.Equal(t, tt.want, got)
		})
	}
}

// FuzzClaimsChallenge: whatever the relay (or something in its place)
// sends, reading it neither panics nor loops.
func FuzzClaimsChallenge(f *testing.F) {
	f.Add(`Bearer realm="clusterconnect", error="insufficient_claims", claims="eyJ9"`)
	f.Add(`Bearer error="a\"b\\", claims=`)
	f.Add(`Bearer ,,,=,="`)
	f.Fuzz(func(t *testing.T, s string) {
		claimsChallenge([]string{s})
		authParams(s)
	})
}
