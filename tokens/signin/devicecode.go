package signin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/oauth2"
)

const stepDevice = "device code sign-in"

// DeviceCode signs a person in with the device code flow (RFC 8628), as
// `az login --use-device-code` and kubelogin's devicecode mode do: it
// shows a URL and a code, the person opens the URL on any device and signs
// in, and the flow polls until they have, declined, or the code expired.
// Its tokens come with a refresh token, which Fetch uses first.
type DeviceCode struct {
	Config
	// Prompt shows the person where to sign in. Nil writes a line to
	// os.Stderr (kubectl shows an exec plugin's stderr).
	Prompt func(*oauth2.DeviceAuthResponse)
	// Claims, if set, is a claims challenge to meet (the claims
	// parameter, e.g. asking for an authentication context): the refresh
	// token is tried with it, and where that sign-in did not meet it, the
	// person signs in again.
	Claims string
}

// Fetch refreshes last if it holds a refresh token the server still takes,
// and otherwise signs in.
func (d *DeviceCode) Fetch(ctx context.Context, last *oauth2.Token) (*oauth2.Token, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	if tok, ok, err := d.refresh(ctx, last, d.Claims); ok || err != nil {
		return tok, err
	}
	conf := &oauth2.Config{ClientID: d.ClientID, Endpoint: d.Endpoint(), Scopes: d.Scopes}
	ctx = d.context(ctx)
	var authOpts []oauth2.AuthCodeOption
	if d.Claims != "" {
		authOpts = append(authOpts, oauth2.SetAuthURLParam("claims", d.Claims))
	}
	resp, err := conf.DeviceAuth(ctx, authOpts...)
	if err != nil {
		return nil, wrap(stepDevice, err)
	}
	prompt := d.Prompt
	if prompt == nil {
		prompt = func(r *oauth2.DeviceAuthResponse) { WritePrompt(os.Stderr, r) }
	}
	prompt(resp)
	tok, err := conf.DeviceAccessToken(ctx, resp, d.popOptions()...)
	if errors.Is(err, context.DeadlineExceeded) && !resp.Expiry.IsZero() && !time.Now().Before(resp.Expiry) {
		// x/oauth2 stops polling at the code's expiry with the context's
		// error; the server would have said expired_token next.
		return nil, &Error{Step: stepDevice, Code: "expired_token", sentinel: ErrCodeExpired}
	}
	if err != nil {
		return nil, wrap(stepDevice, err)
	}
	return tok, nil
}

// WritePrompt writes the line that tells a person where to sign in.
func WritePrompt(w io.Writer, r *oauth2.DeviceAuthResponse) {
	uri := r.VerificationURI
	if r.VerificationURIComplete != "" {
		uri = r.VerificationURIComplete
	}
	fmt.Fprintf(w, "To sign in, open %s in a browser and enter the code %s\n", uri, r.UserCode)
}
