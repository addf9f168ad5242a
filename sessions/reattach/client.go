package reattach

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

// permanent is an error of a DialFunc that says trying again is no use
// (the caller is no longer let through, say): the session ends with it.
type permanent interface {
	error
	Permanent() bool
}

// A DialFunc opens a carrier: a byte stream to a Server, through whatever
// lies between (for clusterconnect, an HTTP/1.1 upgrade to Protocol
// through the relay). A session calls it again, with a fresh context,
// each time it has to re-attach; then agentID is the server the session
// lives in (ServerConfig.AgentID), which the carrier must reach, and
// empty for a new session. An error with a method Permanent() bool that
// reports true ends the session with that error instead of another try.
type DialFunc func(ctx context.Context, agentID string) (net.Conn, error)

// Dial opens a new session on a carrier from dial. When that carrier is
// lost the session dials again, with backoff, until it is re-attached or
// cfg.Grace has passed.
func Dial(ctx context.Context, dial DialFunc, cfg *Config) (*Conn, error) {
	c := cfg.withDefaults()
	nc, err := dial(ctx, "")
	if err != nil {
		return nil, err
	}
	w, br, err := handshake(ctx, nc, hello{}, c.HandshakeTimeout)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if w.ID == (SessionID{}) || w.Received != 0 {
		nc.Close()
		return nil, fmt.Errorf("%w: a new session welcomed as %x at %d", ErrProtocol, w.ID, w.Received)
	}
	conn := newConn(c, w.ID, nc)
	conn.agentID = w.AgentID
	conn.reattach = func() { conn.redial(dial) }
	if err := conn.attach(nc, br, 0); err != nil {
		return nil, err
	}
	go conn.writeLoop()
	return conn, nil
}

// handshake sends h on nc and reads the welcome.
func handshake(ctx context.Context, nc net.Conn, h hello, timeout time.Duration) (welcome, *bufio.Reader, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	nc.SetDeadline(deadline)
	defer nc.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	if _, err := nc.Write(h.append(nil, frameHello)); err != nil {
		return welcome{}, nil, err
	}
	br := bufio.NewReader(nc)
	typ, p, err := readFrame(br, nil)
	switch {
	case err != nil:
		return welcome{}, nil, err
	case typ == frameRefused:
		return welcome{}, nil, fmt.Errorf("%w: %s", ErrRefused, p)
	case typ != frameWelcome:
		return welcome{}, nil, fmt.Errorf("%w: frame type %d for a welcome", ErrProtocol, typ)
	}
	w, err := parseWelcome(p)
	if err == nil && h.ID != (SessionID{}) && w.ID != h.ID {
		err = fmt.Errorf("%w: welcomed to another session", ErrProtocol)
	}
	return w, br, err
}

// Backoff between attempts to re-attach: full jitter up to a bound that
// doubles from the first to the last.
const (
	firstBackoff = 50 * time.Millisecond
	lastBackoff  = 2 * time.Second
)

// redial re-attaches the session from the client's side until it is
// attached again, refused, or past its grace period (then the expiry
// timer ends it).
func (c *Conn) redial(dial DialFunc) {
	bound := firstBackoff
	for {
		c.mu.Lock()
		lostAt, over, attached := c.lostAt, c.err != nil, c.carrier != nil
		c.mu.Unlock()
		left := c.cfg.Grace - time.Since(lostAt)
		if over || attached || left <= 0 {
			return
		}
		err := c.redialOnce(dial, min(left, c.cfg.HandshakeTimeout))
		if err == nil {
			return
		}
		var perm permanent
		if errors.Is(err, ErrRefused) || errors.Is(err, ErrProtocol) || errors.As(err, &perm) && perm.Permanent() {
			c.mu.Lock()
			if c.closing && errors.Is(err, ErrRefused) {
				// The other side has what was sent: it ended the session
				// on the END this side sent before the carrier went.
				err = net.ErrClosed
			}
			c.finishLocked(err)
			c.mu.Unlock()
			return
		}
		time.Sleep(rand.N(bound))
		bound = min(2*bound, lastBackoff)
	}
}

func (c *Conn) redialOnce(dial DialFunc, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nc, err := dial(ctx, c.agentID)
	if err != nil {
		return err
	}
	w, br, err := handshake(ctx, nc, hello{ID: c.id, Received: c.received()}, timeout)
	if err != nil {
		nc.Close()
		return err
	}
	return c.attach(nc, br, w.Received)
}
