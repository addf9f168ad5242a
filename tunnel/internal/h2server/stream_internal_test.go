package h2server

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A handler that reads an upload a little slower than it comes never
// catches up: the body keeps as many chunk slots as it has chunks unread,
// not one for every chunk since the upload began, and reads back every
// byte in order.
func TestABodyReadBehindKeepsItsSlotsFew(t *testing.T) {
	b := &body{}
	var sent, got bytes.Buffer
	frame := make([]byte, bodyChunk)
	p := make([]byte, bodyChunk-100) // each read leaves a little behind
	for i := range 4096 {            // 64 MiB
		for j := range frame {
			frame[j] = byte(i + j)
		}
		sent.Write(frame)
		require.False(t, b.put(frame, false))
		got.Write(p[:b.take(p)])
	}
	assert.LessOrEqual(t, cap(b.chunks), 64, "chunk slots after 4,096 chunks, %d unread", b.unread)
	for b.unread > 0 {
		got.Write(p[:b.take(p)])
	}
	assert.True(t, bytes.Equal(sent.Bytes(), got.Bytes()), "the body read back changed")
}
