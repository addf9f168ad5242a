//lint:file-ignore SA1019 x/net/http2 is the project's HTTP/2 implementation: its Framer is what both ends of the tunnel write with, and on Go 1.26 it is not a wrapper of net/http. See tunnel/PROTOCOL.md.

package h2frame

import "golang.org/x/net/http2"

// WriteHeaderBlock writes a header block for stream id as a HEADERS frame
// and as many CONTINUATION frames as frames of frameSize need; end sets
// END_STREAM.
func WriteHeaderBlock(fr *http2.Framer, id uint32, end bool, frameSize int, block []byte) error {
	first := true
	for first || len(block) > 0 {
		chunk := block[:min(len(block), frameSize)]
		block = block[len(chunk):]
		var err error
		if first {
			err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = fr.WriteContinuation(id, len(block) == 0, chunk)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
