package tunnel

import (
	"io"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// closedStream is an upgrade's stream whose answer has ended while the
// client still sends: writes fail, and the answer's last bytes are read
// only after the first write failed.
type closedStream struct {
	writeFailed chan struct{}
	answer      io.Reader
}

func (s *closedStream) Write([]byte) (int, error) {
	select {
	case <-s.writeFailed:
	default:
		close(s.writeFailed)
	}
	return 0, io.ErrClosedPipe
}

func (s *closedStream) Read(p []byte) (int, error) {
	<-s.writeFailed
	return s.answer.Read(p)
}

func (s *closedStream) Close() error      { return nil }
func (s *closedStream) CloseWrite() error { return nil }
func (s *closedStream) abort()            {}

// A command that exits while its client is still sending ended on the
// cluster's side: the write that fails because the answer is over does
// not make the session one whose connection was lost.
func TestSpliceEndsAsTheAnswerEndedWhenTheClientStillSends(t *testing.T) {
	mine, theirs := net.Pipe()
	go func() { // the client: sends and reads until the session closes
		go io.Copy(io.Discard, theirs)
		for {
			if _, err := theirs.Write([]byte("more input")); err != nil {
				return
			}
		}
	}()
	stream := &closedStream{writeFailed: make(chan struct{}), answer: strings.NewReader("bye")}
	_, out, how := splice(mine, mine, stream, stream)
	assert.Equal(t, copyDone, how)
	assert.EqualValues(t, 3, out, "the answer's last bytes reached the client")
}
