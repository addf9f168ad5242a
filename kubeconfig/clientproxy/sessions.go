package clientproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/clusterconnect/clusterconnect/access"
	"github.com/clusterconnect/clusterconnect/internal/httpx"
	"github.com/clusterconnect/clusterconnect/sessions/reattach"
	"github.com/clusterconnect/clusterconnect/tunnel"
)

// sessionTransport carries each upgrade (exec, attach, port-forward) in a
// session that re-attaches (package sessions/reattach): the relay replica
// it went through, or the path to it, may go, and the session goes on
// through another within the grace period.
type sessionTransport struct {
	tls *tls.Config // for the relay, HTTP/1.1 only
	cfg *reattach.Config
	// plain sends an upgrade as it is, for a cluster whose agent keeps
	// no sessions.
	plain http.RoundTripper
	// auth gives the Authorization header for a carrier: the user's
	// token as it is when the carrier is dialed.
	auth func(out *http.Request) func() (string, error)
}

// RoundTrip opens a session for the cluster named by out's path,
// /clusters/{id}/…, and sends out inside it, without that prefix.
func (t *sessionTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	inner, ok := pathInCluster(out.URL.EscapedPath())
	if !ok {
		return nil, fmt.Errorf("clusterconnect proxy: no cluster in %q", out.URL.Path)
	}
	auth := t.auth(out)
	id, key := httpx.RequestID(out.Header), out.Header.Get(access.HeaderSessionKey)
	var opened string // the request ID the relay gave the first carrier
	dial := func(ctx context.Context, agentID string) (net.Conn, error) {
		c, err := t.dialCarrier(ctx, out.URL.String(), agentID, id, key, opened, auth)
		if err == nil && agentID == "" {
			opened = c.(*carrierConn).id
		}
		return c, err
	}
	conn, err := reattach.Dial(out.Context(), dial, t.cfg)
	var refused *carrierRefused
	if errors.As(err, &refused) {
		// An agent that does not keep sessions (an embedder's own, or an
		// older one), or a refusal of the relay's: the upgrade goes as it
		// is, and kubectl reads the answer, whatever it is.
		return t.plain.RoundTrip(out)
	}
	if err != nil {
		return nil, err
	}
	in := out.Clone(out.Context())
	in.Header.Del(access.HeaderSessionKey) // the relay's alone: the carried request goes to the agent as it is
	in.URL = &url.URL{Path: inner, RawQuery: out.URL.RawQuery}
	if p, err := url.PathUnescape(inner); err == nil && p != inner {
		in.URL.Path, in.URL.RawPath = p, inner
	}
	in.Host = "cluster"
	in.Close = false
	if err := in.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, in)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if opened != "" && httpx.RequestID(resp.Header) == "" {
		// The ID the carried request is recorded under at the agent
		// and the API server.
		resp.Header[httpx.HeaderAuditID] = []string{opened}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &sessionBody{Reader: br, Conn: conn}
		return resp, nil
	}
	resp.Body = &closeBoth{ReadCloser: resp.Body, conn: conn}
	return resp, nil
}

// dialCarrier opens a carrier through the relay: an HTTP/1.1 upgrade to
// reattach.Protocol to target (the relay's URL of the request carried:
// its cluster, path and query), on a connection of its own (through
// HTTPS_PROXY as the proxy's other requests are). The carrier's
// deadlines are the TCP connection's.
func (t *sessionTransport) dialCarrier(ctx context.Context, target, agentID, id, key, opened string, auth func() (string, error)) (net.Conn, error) {
	authorization, err := auth()
	if err != nil {
		return nil, fmt.Errorf("clusterconnect proxy: cannot get your token: %w", err)
	}
	var raw net.Conn
	tr := &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		TLSClientConfig:   t.tls,
		DisableKeepAlives: true,
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			raw = c
			return c, err
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", authorization)
	if id != "" {
		req.Header[httpx.HeaderAuditID] = []string{id}
	}
	if key != "" {
		req.Header.Set(access.HeaderSessionKey, key) // the carrier is the session at the relay
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", reattach.Protocol)
	if agentID != "" && httpguts.ValidHeaderFieldValue(agentID) {
		// The session lives in that agent replica: the relay sends the
		// carrier to its connections only.
		req.Header.Set(tunnel.HeaderToAgent, agentID)
		if opened != "" {
			// If the relay ended the session, it says why.
			req.Header.Set(access.HeaderSessionOf, opened)
		}
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, &carrierRefused{code: resp.StatusCode, status: resp.Status, msg: statusMessage(msg)}
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok || raw == nil {
		resp.Body.Close()
		return nil, fmt.Errorf("clusterconnect proxy: the relay's 101 gave no connection")
	}
	return &carrierConn{ReadWriteCloser: rwc, raw: raw, id: httpx.RequestID(resp.Header)}, nil
}

// carrierRefused is a carrier's upgrade answered with something else.
type carrierRefused struct {
	code        int
	status, msg string
}

func (e *carrierRefused) Error() string {
	return fmt.Sprintf("clusterconnect proxy: the relay answered %s: %s", e.status, e.msg)
}

// Permanent: a session whose caller the relay no longer lets through
// (401, 403) ends at once, with the relay's words, rather than trying
// for its grace period.
func (e *carrierRefused) Permanent() bool {
	return e.code == http.StatusUnauthorized || e.code == http.StatusForbidden
}

// HTTPStatus and ClientMessage tell kubectl (sessions.Upgrades) why.
func (e *carrierRefused) HTTPStatus() int { return e.code }

func (e *carrierRefused) ClientMessage() string {
	return "the relay refused to carry the session on: " + e.msg
}

// pathInCluster is the rest of /clusters/{id}/rest: /rest.
func pathInCluster(escaped string) (rest string, ok bool) {
	after, found := strings.CutPrefix(escaped, "/clusters/")
	if !found {
		return "", false
	}
	cluster, rest, _ := strings.Cut(after, "/")
	return "/" + rest, cluster != ""
}

// carrierConn is a carrier: the relay's upgraded connection, with the
// TCP connection under it for addresses and deadlines.
type carrierConn struct {
	io.ReadWriteCloser
	raw net.Conn
	id  string // the request ID the relay answered
}

func (c *carrierConn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *carrierConn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *carrierConn) SetDeadline(t time.Time) error      { return c.raw.SetDeadline(t) }
func (c *carrierConn) SetReadDeadline(t time.Time) error  { return c.raw.SetReadDeadline(t) }
func (c *carrierConn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// sessionBody is a 101's body: the session, read through the reader that
// took the response's head.
type sessionBody struct {
	io.Reader
	net.Conn
}

func (b *sessionBody) Read(p []byte) (int, error) { return b.Reader.Read(p) }

// closeBoth closes the session with a refused upgrade's body.
type closeBoth struct {
	io.ReadCloser
	conn net.Conn
}

func (c *closeBoth) Close() error {
	err := c.ReadCloser.Close()
	c.conn.Close()
	return err
}
