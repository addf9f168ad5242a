package signin

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/oauth2"
)

const stepBrowser = "browser sign-in"

// DefaultBrowserTimeout bounds how long Browser waits for the person to
// finish signing in.
const DefaultBrowserTimeout = 5 * time.Minute

// Browser signs a person in in their browser with the authorization code
// flow and PKCE (RFC 7636) on a loopback redirect (RFC 8252), as az login
// and kubelogin's interactive mode do: it listens on 127.0.0.1 on a port
// of the system's choosing, opens the sign-in page with
// http://localhost:{port}/ as the redirect URI (what Entra registers for
// public clients such as the Azure CLI's app, any port), and waits for
// the redirect that carries the code. The state is checked, and the code
// is redeemed with the verifier only this process knows, so a code that
// leaks from the redirect is of no use. Its tokens come with a refresh
// token, which Fetch uses first.
type Browser struct {
	Config
	// Open opens url in the person's browser; nil runs the system's
	// opener (xdg-open, open, rundll32). The URL is always written to
	// Out as well, for when no browser opens.
	Open func(url string) error
	// Out receives the line with the URL; nil is os.Stderr (kubectl
	// shows an exec plugin's stderr).
	Out io.Writer
	// Timeout bounds the wait for the person; default
	// DefaultBrowserTimeout.
	Timeout time.Duration
	// Claims, if set, is a claims challenge to meet (the claims
	// parameter, e.g. asking for an authentication context): the refresh
	// token is tried with it, and where that sign-in did not meet it, the
	// person signs in again.
	Claims string
}

// Fetch refreshes last if it holds a refresh token the server still takes
// (for Claims too), and otherwise signs in.
func (b *Browser) Fetch(ctx context.Context, last *oauth2.Token) (*oauth2.Token, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	if tok, ok, err := b.refresh(ctx, last, b.Claims); ok || err != nil {
		return tok, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("signin: %s: a port on 127.0.0.1 for the redirect: %w", stepBrowser, err)
	}
	defer ln.Close()
	redirect := "http://localhost:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/"
	conf := &oauth2.Config{ClientID: b.ClientID, Endpoint: b.Endpoint(), Scopes: b.Scopes, RedirectURL: redirect}
	verifier, state := oauth2.GenerateVerifier(), randomToken()
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("prompt", "select_account")}
	if b.Claims != "" {
		opts = append(opts, oauth2.SetAuthURLParam("claims", b.Claims))
	}
	authURL := conf.AuthCodeURL(state, opts...)

	ctx, cancel := context.WithTimeout(ctx, cmp.Or(b.Timeout, DefaultBrowserTimeout))
	defer cancel()
	got := make(chan redirectResult, 1)
	srv := &http.Server{Handler: redirectHandler(state, got), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer func() {
		// The page the browser was sent is finished first.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()

	out := b.Out
	if out == nil {
		out = os.Stderr
	}
	fmt.Fprintf(out, "To sign in, open this page in a browser if none opened: %s\n", authURL)
	open := b.Open
	if open == nil {
		open = OpenBrowser
	}
	open(authURL) // the line above says what to do if it fails

	var r redirectResult
	select {
	case r = <-got:
	case <-ctx.Done():
		return nil, fmt.Errorf("signin: %s: nobody finished signing in within %v: %w", stepBrowser, cmp.Or(b.Timeout, DefaultBrowserTimeout), ctx.Err())
	}
	if r.err != nil {
		return nil, r.err
	}
	tok, err := conf.Exchange(b.context(ctx), r.code, append(b.popOptions(), oauth2.VerifierOption(verifier))...)
	if err != nil {
		return nil, wrap(stepBrowser, err)
	}
	return tok, nil
}

type redirectResult struct {
	code string
	err  error
}

// redirectHandler takes the one redirect that carries state: its code,
// or the error the sign-in page sent back. Anything else (a wrong state,
// another path, the browser's favicon request) is answered and ignored,
// so that another local process cannot end the sign-in or slip in a code
// of its own.
func redirectHandler(state string, got chan<- redirectResult) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/" || subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
			http.Error(w, "not a sign-in redirect of this process", http.StatusBadRequest)
			return
		}
		var res redirectResult
		switch {
		case q.Get("error") != "":
			e := &Error{Step: stepBrowser, Code: q.Get("error"), Description: q.Get("error_description")}
			if e.Code == "access_denied" {
				e.sentinel = ErrDeclined
			}
			res.err = e
		case q.Get("code") == "":
			res.err = fmt.Errorf("signin: %s: the redirect carried no code", stepBrowser)
		default:
			res.code = q.Get("code")
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if res.err != nil {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "<html><body><p>Sign-in failed: %s</p></body></html>\n", html.EscapeString(res.err.Error()))
		} else {
			io.WriteString(w, "<html><body><p>Signed in. You can close this window and go back to the terminal.</p></body></html>\n")
		}
		select {
		case got <- res:
		default: // a second redirect with the state: the first one counts
		}
	})
}

// OpenBrowser opens url with the system's opener: xdg-open on Linux and
// the BSDs, open on macOS, rundll32 on Windows.
func OpenBrowser(url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	// The opener's output is not ours to show; kubectl shows our stderr.
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}

// HasBrowser reports whether this session can likely show a browser: a
// desktop (macOS, Windows) or, elsewhere, a display (DISPLAY or
// WAYLAND_DISPLAY) with xdg-open. Not over SSH without one, nor in a
// container or a CI runner: there device code sign-in is the way.
func HasBrowser() bool {
	switch runtime.GOOS {
	case "darwin", "windows":
		return os.Getenv("SSH_CONNECTION") == ""
	}
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return false
	}
	_, err := exec.LookPath("xdg-open")
	return err == nil
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
