package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// handshakeError is an agent's failed handshake: the relay answered with
// something other than 101. Status and Message come from the relay, and
// RetryAfter from its Retry-After, if it sent one in seconds.
type handshakeError struct {
	StatusCode int
	Message    string
	RetryAfter time.Duration
}

// retryAfter reads a Retry-After given in seconds; 0 for anything else.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

func (e *handshakeError) Error() string {
	return fmt.Sprintf("tunnel: relay refused the tunnel: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// dial opens one tunnel connection: TCP (through an HTTP CONNECT proxy if
// one applies), TLS, and the handshake. It returns the connection ready for
// HTTP/2, with any bytes the relay sent after its 101 kept in front.
func (a *Agent) dial(ctx context.Context) (*batchedConn, replicaInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.HandshakeTimeout)
	defer cancel()
	cred, err := a.cfg.Credential.Credential(ctx)
	if err != nil {
		return nil, replicaInfo{}, fmt.Errorf("tunnel: getting the agent credential: %w", err)
	}
	raw, err := a.dialTCP(ctx)
	if err != nil {
		return nil, replicaInfo{}, err
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() }) // unblocks the handshake on timeout
	defer stop()

	tcfg := a.cfg.TLSConfig.Clone()
	if tcfg == nil {
		tcfg = &tls.Config{}
	}
	if tcfg.ServerName == "" {
		tcfg.ServerName = a.relay.Hostname()
	}
	tcfg.NextProtos = []string{"http/1.1"} // the handshake is an HTTP/1.1 upgrade
	batch := &recordBatcher{Conn: raw}
	conn := tls.Client(batch, tcfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, replicaInfo{}, fmt.Errorf("tunnel: TLS with relay %s: %w", a.relay.Host, err)
	}
	req, err := newHandshakeRequest(a.relay.String(), Handshake{ClusterID: a.cfg.ClusterID, AgentID: a.cfg.AgentID, Credential: cred})
	if err != nil {
		conn.Close()
		return nil, replicaInfo{}, err
	}
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, replicaInfo{}, fmt.Errorf("tunnel: sending handshake: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, replicaInfo{}, fmt.Errorf("tunnel: handshake with relay %s timed out", a.relay.Host)
		}
		return nil, replicaInfo{}, fmt.Errorf("tunnel: reading handshake answer: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		msg := readStatusMessage(resp.Body)
		resp.Body.Close()
		conn.Close()
		return nil, replicaInfo{}, &handshakeError{StatusCode: resp.StatusCode, Message: msg, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	if !httpguts.HeaderValuesContainsToken(resp.Header["Upgrade"], ProtocolV1) {
		conn.Close()
		return nil, replicaInfo{}, fmt.Errorf("tunnel: relay switched to %q, not %s", resp.Header.Get("Upgrade"), ProtocolV1)
	}
	if !stop() {
		conn.Close()
		return nil, replicaInfo{}, fmt.Errorf("tunnel: handshake with relay %s timed out", a.relay.Host)
	}
	ri := replicaInfo{id: resp.Header.Get(HeaderReplica)}
	ri.count, _ = strconv.Atoi(resp.Header.Get(HeaderReplicas))
	ri.reconnectWindow = reconnectWindowOf(resp.Header)
	var nc net.Conn = conn
	if br.Buffered() > 0 {
		nc = &bufferedConn{Conn: conn, r: io.MultiReader(io.LimitReader(br, int64(br.Buffered())), conn)}
	}
	return &batchedConn{Conn: nc, b: batch}, ri, nil
}

// replicaInfo is what a fleet relay says of itself in its 101: its
// replica ID and how many replicas the fleet has (0 if it did not say).
type replicaInfo struct {
	id    string
	count int
	// reconnectWindow is how long the relay asks its agents to spread
	// their reconnects over when they all lose it (HeaderReconnectWindow).
	reconnectWindow time.Duration
}

// reconnectWindowOf reads the reconnect window a relay says in h
// (HeaderReconnectWindow), up to maxReconnectWindow; 0 if it says none.
func reconnectWindowOf(h http.Header) time.Duration {
	secs, err := strconv.Atoi(h.Get(HeaderReconnectWindow))
	if err != nil || secs <= 0 {
		return 0
	}
	return min(time.Duration(secs)*time.Second, maxReconnectWindow)
}

// readStatusMessage extracts the message of a Status body, or the start of
// any other body.
func readStatusMessage(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, 4096))
	if i := strings.Index(string(b), `"message":"`); i >= 0 {
		rest := string(b[i+len(`"message":"`):])
		if j := strings.Index(rest, `"`); j >= 0 {
			return rest[:j]
		}
	}
	return strings.TrimSpace(string(b))
}

// dialTCP connects to the relay, or to the proxy that Config.Proxy names
// for it and through it with CONNECT.
func (a *Agent) dialTCP(ctx context.Context) (net.Conn, error) {
	proxy, err := a.cfg.Proxy(&http.Request{Method: http.MethodGet, URL: a.relay, Header: http.Header{}})
	if err != nil {
		return nil, fmt.Errorf("tunnel: choosing a proxy: %w", err)
	}
	target := hostPort(a.relay)
	var d net.Dialer
	dial := d.DialContext
	if a.cfg.DialContext != nil {
		dial = a.cfg.DialContext
	}
	if proxy == nil {
		c, err := dial(ctx, "tcp", target)
		if err != nil {
			return nil, fmt.Errorf("tunnel: connecting to relay: %w", err)
		}
		return c, nil
	}
	if proxy.Scheme != "http" && proxy.Scheme != "https" {
		return nil, fmt.Errorf("tunnel: proxy scheme %q not supported (use http or https)", proxy.Scheme)
	}
	c, err := dial(ctx, "tcp", hostPort(proxy))
	if err != nil {
		return nil, fmt.Errorf("tunnel: connecting to proxy %s: %w", proxy.Host, err)
	}
	if proxy.Scheme == "https" {
		tc := tls.Client(c, &tls.Config{ServerName: proxy.Hostname()}) // system roots
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("tunnel: TLS with proxy %s: %w", proxy.Host, err)
		}
		c = tc
	}
	if err := connectThrough(ctx, c, proxy, target); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// connectThrough asks an HTTP proxy for a tunnel to target.
func connectThrough(ctx context.Context, c net.Conn, proxy *url.URL, target string) error {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: target}, Host: target, Header: http.Header{}}
	if u := proxy.User; u != nil {
		pass, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass)))
	}
	if err := req.Write(c); err != nil {
		return fmt.Errorf("tunnel: CONNECT through proxy %s: %w", proxy.Host, err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fmt.Errorf("tunnel: CONNECT through proxy %s: %w", proxy.Host, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("tunnel: proxy %s refused CONNECT to %s: %s", proxy.Host, target, resp.Status)
	}
	if br.Buffered() > 0 {
		return errors.New("tunnel: proxy sent data before the tunnel was used")
	}
	return nil
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "http" {
		return net.JoinHostPort(u.Hostname(), "80")
	}
	return net.JoinHostPort(u.Hostname(), "443")
}
