package login

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// ErrUnusable is wrapped by CheckToken's errors: the token would be
// refused, and what to do about it is in the message.
var ErrUnusable = errors.New("login: the token would be refused")

// CheckToken says, before tok is sent, what the relay would refuse in it
// that the client can see for itself — it has expired, or it is of
// another tenant than -tenant-id — and what to do, in the words of where
// the token came from. It reads the token without verifying it; the relay
// decides. A token it cannot read (not a JWT) passes, as does a signed
// use of a proof-of-possession token (-pop-host), made for one request
// and given as expiring at once.
func (o *Options) CheckToken(tok *oauth2.Token, now time.Time) error {
	if o.PoPHost != "" {
		return nil
	}
	c, _ := source.ReadUnverified(tok.AccessToken)
	exp := tok.Expiry
	if exp.IsZero() {
		exp = c.Expiry
	}
	from, fix := o.origin()
	switch {
	case !exp.IsZero() && !now.Before(exp):
		return fmt.Errorf("%w: %s expired at %s: %s", ErrUnusable, from, exp.UTC().Format(time.RFC3339), fix)
	case o.TenantID != "" && c.TenantID != "" && c.TenantID != o.TenantID:
		if o.Mode == "azurecli" {
			fix = "run az login --tenant " + o.TenantID
		}
		return fmt.Errorf("%w: %s is of tenant %s, and this cluster's sign-in is for tenant %s (-tenant-id): %s",
			ErrUnusable, from, c.TenantID, o.TenantID, fix)
	}
	return nil
}

// origin names where the token comes from, and how to get a good one.
func (o *Options) origin() (from, fix string) {
	switch {
	case o.Token != "":
		return "the token given with -token", "give a new one"
	case o.TokenFile != "":
		return "the token in " + o.TokenFile, "put a new one there"
	case o.TokenCommand != "":
		return "the token -token-command printed", "check what the command prints, and sign it in again"
	case o.Mode == "azurecli":
		return "the token az gave", "run az login"
	}
	return "the token of -login " + o.Mode, "sign in again with an empty token cache (proxy logout), and check this machine's clock"
}
