package login

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/tokens/signin"
	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// ErrNoStepUp is wrapped by StepUp's errors where the sign-in mode has
// nobody who could meet a claims challenge.
var ErrNoStepUp = errors.New("login: this sign-in cannot meet a claims challenge")

// StepUpper is a token source that can sign in again to meet a claims
// challenge (a relay's 401 with error="insufficient_claims"): the sources
// Options.TokenSource gives for a person (-login interactive and
// devicecode) are. Its tokens from then on carry what was asked for.
type StepUpper interface {
	oauth2.TokenSource
	StepUp(ctx context.Context, claims string) (*oauth2.Token, error)
}

// stepUp is the source of a mode that signs a person in: StepUp signs
// them in again with the claims, through the disk cache so that the next
// kubectl call's plugin has the stronger token too.
type stepUp struct {
	oauth2.TokenSource
	replace func(ctx context.Context, claims string) (*oauth2.Token, error)

	mu  sync.Mutex
	tok *oauth2.Token // the last stepped-up token, used while fresh
}

func (s *stepUp) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	tok := s.tok
	s.mu.Unlock()
	if tok != nil && time.Until(tok.Expiry) > source.DefaultEarlyExpiry {
		return tok, nil
	}
	return s.TokenSource.Token()
}

func (s *stepUp) StepUp(ctx context.Context, claims string) (*oauth2.Token, error) {
	tok, err := s.replace(ctx, claims)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.tok = tok
	s.mu.Unlock()
	return tok, nil
}

// StepUpError is what to say when the relay asks for a stronger sign-in
// (a claims challenge) and the options' source is no StepUpper.
func (o *Options) StepUpError() error {
	from, _ := o.origin()
	return fmt.Errorf("%w: the relay asks for a stronger sign-in, which %s cannot give: sign in as a person (-login interactive or devicecode)", ErrNoStepUp, from)
}

// withStepUp wraps src, the cached source of a mode that signs a person
// in, so that it can meet a claims challenge.
func (o *Options) withStepUp(src oauth2.TokenSource, cfg signin.Config) oauth2.TokenSource {
	m := lookup(o.Mode)
	return &stepUp{TokenSource: src, replace: func(ctx context.Context, claims string) (*oauth2.Token, error) {
		oc := *o
		oc.claims = claims
		key, f, err := m.fetcher(&oc, cfg)
		if err != nil {
			return nil, err
		}
		if o.NoCache {
			last, _ := src.Token()
			return f.Fetch(ctx, last)
		}
		dir, err := o.cacheDirectory()
		if err != nil {
			return nil, err
		}
		return (&source.DiskCache{Dir: dir}).Replace(ctx, key, f)
	}}
}
