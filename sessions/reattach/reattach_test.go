package reattach_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/memnet"
	"github.com/clusterconnect/clusterconnect/sessions/reattach"
)

// pair is a server on an in-memory network, whose carriers all come from
// caller "alice", and a way to dial it; made inside a synctest bubble.
type pair struct {
	net  *memnet.Net
	srv  *reattach.Server
	dial reattach.DialFunc
	ln   net.Listener
}

func newPair(t *testing.T, cfg *reattach.ServerConfig) *pair {
	t.Helper()
	if cfg == nil {
		cfg = &reattach.ServerConfig{}
	}
	cfg.AgentID = "agent-1"
	p := &pair{net: memnet.New(), srv: reattach.NewServer(cfg)}
	ln := p.net.Listen("agent")
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go p.srv.Serve(nc, "alice")
		}
	}()
	p.dial = func(ctx context.Context, _ string) (net.Conn, error) {
		return p.net.DialAs("carrier")(ctx, "mem", "agent")
	}
	p.ln = ln
	return p
}

// end closes the server, ending every session, and waits in the bubble
// until every goroutine is gone (a client dialing a cut network gives up
// after its grace period).
func (p *pair) end() {
	p.ln.Close()
	p.srv.Close()
	time.Sleep(2 * reattach.DefaultGrace)
	synctest.Wait()
}

// accept returns the server's side of the next new session.
func (p *pair) accept(t *testing.T) net.Conn {
	t.Helper()
	c, err := p.srv.Accept()
	require.NoError(t, err)
	return c
}

// cut ends every carrier now, and lets new ones through after down.
func (p *pair) cut(down time.Duration) {
	back := p.net.Cut("carrier")
	time.AfterFunc(down, back)
}

// TestBytesSurviveCarrierLosses sends 4 MiB each way while carriers are
// cut again and again: both sides read exactly what the other wrote.
func TestBytesSurviveCarrierLosses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, nil)
		client, err := reattach.Dial(t.Context(), p.dial, nil)
		require.NoError(t, err)
		assert.Equal(t, "agent-1", client.AgentID())
		server := p.accept(t)

		const size = 4 << 20
		up, down := randomBytes(size, 1), randomBytes(size, 2)
		gotUp, gotDown := make(chan []byte), make(chan []byte)
		// A byte lost would leave a reader waiting: it gives up instead.
		client.SetReadDeadline(time.Now().Add(time.Minute))
		server.SetReadDeadline(time.Now().Add(time.Minute))
		go writeSlowly(client, up)
		go writeSlowly(server, down)
		go func() { b, _ := io.ReadAll(io.LimitReader(server, size)); gotUp <- b }()
		go func() { b, _ := io.ReadAll(io.LimitReader(client, size)); gotDown <- b }()
		for range 5 {
			time.Sleep(300 * time.Millisecond)
			p.cut(time.Second)
		}
		assert.Equal(t, sha256.Sum256(up), sha256.Sum256(<-gotUp))
		assert.Equal(t, sha256.Sum256(down), sha256.Sum256(<-gotDown))
		p.end()
	})
}

// writeSlowly writes b in 64 KiB pieces, 10 ms apart, so that carriers are
// cut with bytes in flight.
func writeSlowly(w io.Writer, b []byte) {
	for len(b) > 0 {
		n := min(len(b), 64<<10)
		if _, err := w.Write(b[:n]); err != nil {
			return
		}
		b = b[n:]
		time.Sleep(10 * time.Millisecond)
	}
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestCloseDeliversThenEOF: what a side wrote before Close reaches the
// other side, which then reads io.EOF, even when the carrier is cut
// right after Close.
func TestCloseDeliversThenEOF(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, nil)
		client, err := reattach.Dial(t.Context(), p.dial, nil)
		require.NoError(t, err)
		server := p.accept(t)
		msg := randomBytes(300<<10, 3)
		_, err = server.Write(msg)
		require.NoError(t, err)
		require.NoError(t, server.Close())
		p.cut(time.Second)
		got, err := io.ReadAll(client)
		require.NoError(t, err, "the client reads io.EOF after everything")
		assert.True(t, bytes.Equal(msg, got))
		_, err = client.Write([]byte("x"))
		assert.ErrorIs(t, err, reattach.ErrPeerClosed)
		require.NoError(t, client.Close())
		// Had the cut taken the client's acknowledgement of the END, the
		// server waits for a carrier that does not come: for the grace
		// period, no longer.
		time.Sleep(reattach.DefaultGrace)
		synctest.Wait()
		assert.Equal(t, 0, p.srv.Sessions(), "an ended session is not kept")
		p.end()
	})
}

// TestLostAfterGrace: a carrier that never comes back ends the session on
// both sides after the grace period, not before.
func TestLostAfterGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := &reattach.Config{Grace: 10 * time.Second}
		p := newPair(t, &reattach.ServerConfig{Config: *cfg})
		client, err := reattach.Dial(t.Context(), p.dial, cfg)
		require.NoError(t, err)
		server := p.accept(t)
		start := time.Now()
		p.net.Cut("carrier") // and never back
		_, err = client.Read(make([]byte, 1))
		assert.ErrorIs(t, err, reattach.ErrLost)
		_, err = server.Read(make([]byte, 1))
		assert.ErrorIs(t, err, reattach.ErrLost)
		assert.GreaterOrEqual(t, time.Since(start), 10*time.Second)
		assert.Less(t, time.Since(start), 11*time.Second)
		synctest.Wait()
		assert.Equal(t, 0, p.srv.Sessions())
		p.end()
	})
}

// TestBlackHoleFoundAndLeft: a carrier on which nothing arrives any more
// (packets dropped, no reset) is given up after DeadAfter and the
// session goes on over a new one.
func TestBlackHoleFoundAndLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, nil)
		client, err := reattach.Dial(t.Context(), p.dial, nil)
		require.NoError(t, err)
		server := p.accept(t)
		p.net.Freeze("carrier") // the frozen carrier stays frozen
		start := time.Now()
		_, err = server.Write([]byte("still there?"))
		require.NoError(t, err)
		buf := make([]byte, 64)
		n, err := client.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "still there?", string(buf[:n]))
		assert.LessOrEqual(t, time.Since(start), reattach.DefaultDeadAfter+time.Second)
		p.end()
	})
}

// TestOnlyTheOpenerReattaches: a carrier from another caller naming the
// session is refused in words that do not say whether it exists, and
// the session goes on for its owner.
func TestOnlyTheOpenerReattaches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, nil)
		client, err := reattach.Dial(t.Context(), p.dial, nil)
		require.NoError(t, err)
		server := p.accept(t)

		other, mine := net.Pipe()
		go p.srv.Serve(mine, "mallory")
		id := client.ID()
		hello := append([]byte{1, 0, 0, 24}, id[:]...)
		hello = append(hello, make([]byte, 8)...)
		go other.Write(hello)
		answer, _ := io.ReadAll(other)
		assert.Equal(t, byte(3), answer[0], "refused")
		assert.Contains(t, string(answer), "no such session")

		other, mine = net.Pipe()
		go p.srv.Serve(mine, "mallory")
		unknown := bytes.Clone(hello)
		unknown[4] ^= 0xff
		go other.Write(unknown)
		answer2, _ := io.ReadAll(other)
		assert.Equal(t, answer, answer2, "an unknown session and another caller's read the same")

		_, err = client.Write([]byte("ping"))
		require.NoError(t, err)
		buf := make([]byte, 4)
		_, err = io.ReadFull(server, buf)
		require.NoError(t, err)
		p.end()
	})
}

// TestDetachedSessionsAreBounded: past MaxDetachedPerCaller, a caller's
// session whose carrier is lost ends at once instead of waiting.
func TestDetachedSessionsAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, &reattach.ServerConfig{MaxDetachedPerCaller: 2})
		var servers []net.Conn
		for range 3 {
			_, err := reattach.Dial(t.Context(), p.dial, nil)
			require.NoError(t, err)
			servers = append(servers, p.accept(t))
		}
		p.net.Cut("carrier") // never back
		ended := 0
		for _, s := range servers {
			s.SetReadDeadline(time.Now().Add(time.Second))
			_, err := s.Read(make([]byte, 1))
			if errors.Is(err, reattach.ErrLost) {
				ended++
			}
		}
		assert.Equal(t, 1, ended, "one session past the bound ends at once; two wait")
		p.end()
	})
}

// TestWriteWaitsForTheWindow: a side whose peer reads nothing can write
// one window, then Write waits: nobody holds more than that.
func TestWriteWaitsForTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, nil)
		client, err := reattach.Dial(t.Context(), p.dial, nil)
		require.NoError(t, err)
		server := p.accept(t)
		client.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := client.Write(make([]byte, 2*reattach.DefaultWindow))
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.Equal(t, reattach.DefaultWindow, n)
		got, err := io.ReadFull(server, make([]byte, n))
		require.NoError(t, err)
		assert.Equal(t, n, got)
		client.SetWriteDeadline(time.Time{})
		_, err = client.Write(make([]byte, reattach.DefaultWindow/2))
		assert.NoError(t, err, "what was read makes room")
		p.end()
	})
}
