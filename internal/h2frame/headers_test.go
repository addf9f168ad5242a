//lint:file-ignore SA1019 x/net/http2's Framer reads back what WriteHeaderBlock wrote.

package h2frame_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/clusterconnect/clusterconnect/internal/h2frame"
)

// A block larger than a frame goes as HEADERS and CONTINUATION frames, each
// at most the frame size, the last one ending the block; a small one as
// HEADERS alone.
func TestWriteHeaderBlockSplitsIntoFrames(t *testing.T) {
	block := bytes.Repeat([]byte{0x40}, 40<<10) // not a valid HPACK block: the framer is read raw
	var b bytes.Buffer
	fr := http2.NewFramer(&b, &b)
	require.NoError(t, h2frame.WriteHeaderBlock(fr, 5, true, 16<<10, block))
	require.NoError(t, h2frame.WriteHeaderBlock(fr, 7, false, 16<<10, block[:100]))

	var got []byte
	var kinds []string
	for range 4 {
		f, err := fr.ReadFrame()
		require.NoError(t, err)
		switch f := f.(type) {
		case *http2.HeadersFrame:
			kinds = append(kinds, "HEADERS")
			assert.LessOrEqual(t, len(f.HeaderBlockFragment()), 16<<10)
			if f.StreamID == 5 {
				assert.True(t, f.StreamEnded())
				assert.False(t, f.HeadersEnded())
				got = append(got, f.HeaderBlockFragment()...)
			} else {
				assert.False(t, f.StreamEnded())
				assert.True(t, f.HeadersEnded())
				assert.Len(t, f.HeaderBlockFragment(), 100)
			}
		case *http2.ContinuationFrame:
			kinds = append(kinds, "CONTINUATION")
			got = append(got, f.HeaderBlockFragment()...)
		}
	}
	assert.Equal(t, []string{"HEADERS", "CONTINUATION", "CONTINUATION", "HEADERS"}, kinds)
	assert.Equal(t, block, got)
}
