package memnet_test

import (
	"context"
	"io"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/memnet"
)

func pair(t *testing.T, n *memnet.Net, who string) (client, server interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
}) {
	ln := n.Listen("srv:1")
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan *memnet.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c.(*memnet.Conn)
		}
	}()
	c, err := n.DialAs(who)(context.Background(), "tcp", "srv:1")
	require.NoError(t, err)
	return c.(*memnet.Conn), <-accepted
}

// Bytes cross at once, a frozen path holds them until it thaws, and a cut
// ends the connection and refuses new ones until the network is back.
func TestFreezeAndCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		c, s := pair(t, n, "a")
		buf := make([]byte, 8)
		c.Write([]byte("hi"))
		k, err := s.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "hi", string(buf[:k]))

		thaw := n.Freeze("a")
		c.Write([]byte("held"))
		got := make(chan string, 1)
		go func() { k, _ := s.Read(buf); got <- string(buf[:k]) }()
		time.Sleep(time.Hour)
		synctest.Wait()
		assert.Empty(t, got, "nothing crosses a frozen path")
		thaw()
		assert.Equal(t, "held", <-got)

		back := n.Cut("a")
		_, err = s.Read(buf)
		assert.ErrorIs(t, err, io.EOF)
		_, err = n.Dial(context.Background(), "tcp", "srv:1")
		assert.Error(t, err, "dials refused while cut")
		back()
	})
}

// A read deadline ends a waiting read when it passes, and setting a new
// one wakes a read that waits on the old.
func TestReadDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := memnet.New()
		_, s := pair(t, n, "a")
		s.SetReadDeadline(time.Now().Add(time.Hour))
		ended := make(chan error, 1)
		go func() { _, err := s.Read(make([]byte, 1)); ended <- err }()
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Empty(t, ended)
		s.SetReadDeadline(time.Now().Add(-time.Second)) // as net/http aborts a background read
		assert.ErrorIs(t, <-ended, os.ErrDeadlineExceeded)
	})
}
