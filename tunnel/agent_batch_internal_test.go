package tunnel

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Closing the agent's connection while a batch's write is stuck (the
// relay stopped reading) fails that write at once, as crypto/tls closes a
// connection with its own write in flight, instead of queueing the
// close_notify alert behind it until the write gives up (crypto/tls's 5 s
// alert deadline).
func TestClosingFailsAStuckBatchAtOnce(t *testing.T) {
	ca, cert := relayCert(t)
	var err error

	relaySide, agentSide := net.Pipe()
	t.Cleanup(func() { relaySide.Close(); agentSide.Close() })
	server := tls.Server(relaySide, &tls.Config{Certificates: []tls.Certificate{cert}})
	batch := &recordBatcher{Conn: agentSide}
	client := tls.Client(batch, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
	handshook := make(chan error, 1)
	go func() { handshook <- server.Handshake() }()
	require.NoError(t, client.Handshake())
	require.NoError(t, <-handshook)
	conn := &batchedConn{Conn: client, b: batch}

	// The relay reads nothing more: the batch's write blocks.
	batch.Start()
	_, err = conn.Write(make([]byte, 64<<10))
	require.NoError(t, err, "a batch is kept, not written")
	flushed := make(chan error, 1)
	go func() { flushed <- batch.Flush() }()
	require.Eventually(t, batch.batch.flushing.Load, 10*time.Second, time.Millisecond, "the batch's write never began")

	conn.Close()
	err = <-flushed
	require.Error(t, err)
	assert.ErrorIs(t, err, io.ErrClosedPipe, "the stuck write failed because the connection closed, not by a deadline")
}
