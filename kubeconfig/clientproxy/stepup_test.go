package clientproxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/kubeconfig/clientproxy"
)

// stepping is a user's token source that signs in again when asked.
type stepping struct {
	mu     sync.Mutex
	tok    string
	claims []string
	fail   error
}

func (s *stepping) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &oauth2.Token{AccessToken: s.tok}, nil
}

func (s *stepping) StepUp(_ context.Context, claims string) (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims = append(s.claims, claims)
	if s.fail != nil {
		return nil, s.fail
	}
	s.tok = "stepped"
	return &oauth2.Token{AccessToken: s.tok}, nil
}

var _ clientproxy.StepUpper = (*stepping)(nil)

// A write the relay answers with a claims challenge is sent again, body
// and all, once the user has signed in again: the client sees only the
// answer to the second.
func TestStepUpAWrite(t *testing.T) {
	r := newRelay(t)
	r.stepUp.Store(true)
	src := &stepping{tok: "user-token"}
	rp := start(t, r, func(c *clientproxy.Config) { c.TokenSource = src })

	const secret = `{"kind":"Secret","apiVersion":"v1","metadata":{"name":"tls"},"stringData":{"key":"value"}}`
	resp, err := rp.client().Post(rp.url+"/api/v1/namespaces/ns/secrets", "application/json", strings.NewReader(secret))
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, []string{`{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`}, src.claims)
	r.mu.Lock()
	assert.Equal(t, []string{secret, secret}, r.bodies, "the body, sent twice")
	r.mu.Unlock()
	assert.Equal(t, "Bearer stepped", r.last().auth)

	// The next one goes with the stronger token at once.
	resp, _ = get(t, rp, "/api/v1/namespaces/ns/secrets/tls", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Len(t, src.claims, 1)
}

// An exec the relay challenges goes on after the step-up.
func TestStepUpAnExec(t *testing.T) {
	r := newRelay(t)
	r.stepUp.Store(true)
	src := &stepping{tok: "user-token"}
	rp := start(t, r, func(c *clientproxy.Config) { c.TokenSource = src })
	conn, br := upgradeExec(t, rp)
	fmt.Fprint(conn, "after the step-up\n")
	line, err := br.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "echo: after the step-up\n", line)
	assert.Len(t, src.claims, 1)
}

// Where no step-up can be had, the client reads the relay's refusal.
func TestStepUpRefusedReachesTheClient(t *testing.T) {
	r := newRelay(t)
	r.stepUp.Store(true)
	for name, tweak := range map[string]func(*clientproxy.Config){
		"a source that cannot step up": nil,
		"a sign-in that fails": func(c *clientproxy.Config) {
			c.TokenSource = &stepping{tok: "user-token", fail: errors.New("signin: browser sign-in: access_denied")}
		},
	} {
		t.Run(name, func(t *testing.T) {
			rp := start(t, r, tweak)
			resp, body := get(t, rp, "/api/v1/namespaces/ns/secrets/tls", "")
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			assert.Contains(t, body, "this cluster asks for a stronger sign-in")
		})
	}
}
