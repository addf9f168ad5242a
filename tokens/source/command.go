package source

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	clientauthv1 "k8s.io/client-go/pkg/apis/clientauthentication/v1"
)

// Command runs a command that prints a token: the bare token, or JSON as
// `az account get-access-token` prints it (accessToken with expires_on or
// expiresOn), an OAuth token response (access_token, expires_in), or a
// Kubernetes ExecCredential. A token whose expiry cannot be told is given
// one UnknownExpiry away. Wrap it in Cached so it runs only when the token
// is about to expire.
type Command struct {
	// Command and its arguments, e.g. {"az", "account", "get-access-token",
	// "--resource", "api://my-server-app", "-o", "json"}.
	Command []string
	// Env is added to the environment.
	Env []string
	// Timeout bounds one run; default 1 minute.
	Timeout time.Duration

	now func() time.Time
}

// UnknownExpiry is the lifetime given to a token that does not tell its own.
const UnknownExpiry = 5 * time.Minute

// Token runs the command.
func (c *Command) Token() (*oauth2.Token, error) {
	if len(c.Command) == 0 {
		return nil, fmt.Errorf("%w: no command configured", ErrNoToken)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Command[0], c.Command[1:]...)
	cmd.Env = append(os.Environ(), c.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("%w: token command %q failed: %v: %s", ErrNoToken, c.Command[0], err, summary(stderr.String()))
	}
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	tok, err := parseOutput(stdout.Bytes(), now)
	if err != nil {
		return nil, fmt.Errorf("%w: token command %q: %v", ErrNoToken, c.Command[0], err)
	}
	if tok.Expiry.IsZero() {
		tok.Expiry = now.Add(UnknownExpiry)
	}
	return tok, nil
}

// parseOutput reads what a token command printed. Errors never quote the
// output, which holds the token.
func parseOutput(out []byte, now time.Time) (*oauth2.Token, error) {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return nil, errors.New("it printed nothing")
	}
	if out[0] != '{' {
		line, _, _ := strings.Cut(string(out), "\n")
		v := strings.TrimSpace(line)
		return bearer(v, jwtExpiry(v)), nil
	}
	var doc struct {
		AccessToken  string                             `json:"accessToken"`
		AccessToken2 string                             `json:"access_token"`
		ExpiresOnNum json.Number                        `json:"expires_on"`
		ExpiresOn    string                             `json:"expiresOn"`
		ExpiresIn    json.Number                        `json:"expires_in"`
		Kind         string                             `json:"kind"`
		Status       *clientauthv1.ExecCredentialStatus `json:"status"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, errors.New("its output is neither a token nor JSON")
	}
	tok := bearer(cmp.Or(doc.AccessToken, doc.AccessToken2), time.Time{})
	if doc.Kind == "ExecCredential" && doc.Status != nil {
		tok.AccessToken = doc.Status.Token
		if doc.Status.ExpirationTimestamp != nil {
			tok.Expiry = doc.Status.ExpirationTimestamp.Time
		}
	}
	if tok.AccessToken == "" {
		return nil, errors.New("its JSON has no accessToken, access_token or status.token")
	}
	switch {
	case !tok.Expiry.IsZero():
	case doc.ExpiresOnNum != "":
		if n, err := strconv.ParseInt(string(doc.ExpiresOnNum), 10, 64); err == nil {
			tok.Expiry = time.Unix(n, 0)
		}
	case doc.ExpiresOn != "":
		// az prints local time without a zone: "2026-11-22 21:00:00.000000".
		for _, layout := range []string{time.RFC3339, "2006-01-02 15:04:05.999999", "2006-01-02 15:04:05"} {
			if t, err := time.ParseInLocation(layout, doc.ExpiresOn, time.Local); err == nil {
				tok.Expiry = t
				break
			}
		}
	case doc.ExpiresIn != "":
		if n, err := strconv.ParseInt(string(doc.ExpiresIn), 10, 64); err == nil {
			tok.Expiry = now.Add(time.Duration(n) * time.Second)
		}
	}
	if tok.Expiry.IsZero() {
		tok.Expiry = jwtExpiry(tok.AccessToken)
	}
	return tok, nil
}

// summary keeps what a person needs of a failed command's stderr. az and
// tools like it print warnings, then "ERROR: …" and what to run about it,
// then perhaps a traceback: from the first ERROR line (else the last few
// lines), three lines that are not a traceback's.
func summary(stderr string) string {
	var lines []string
	first := -1
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Traceback") || strings.HasPrefix(l, "File \"") {
			continue
		}
		if first < 0 && strings.HasPrefix(strings.ToUpper(l), "ERROR") {
			first = len(lines)
		}
		lines = append(lines, l)
	}
	if first < 0 {
		first = max(0, len(lines)-3)
	}
	s := strings.Join(lines[first:min(len(lines), first+3)], " / ")
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	if s == "" {
		return "(it printed nothing on stderr)"
	}
	return s
}
