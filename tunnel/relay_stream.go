package tunnel

import (
	"bufio"
	"io"
	"net"
	"time"
)

// relayStream is the relay's end of a raw stream, as a net.Conn.
type relayStream struct {
	rawConn
	body    io.ReadCloser  // the response body: framed bytes from the agent
	w       *io.PipeWriter // the request body: bytes to the agent
	cancel  func()         // resets the stream
	onClose func()
}

func newRelayStream(body io.ReadCloser, w *io.PipeWriter, cancel func(), cluster string, c *counters, onClose func()) *relayStream {
	s := &relayStream{body: body, w: w, cancel: cancel, onClose: onClose}
	s.rawConn = rawConn{
		in:            newDeadlineReader(&frameReader{r: bufio.NewReaderSize(body, 32<<10)}),
		writeDeadline: newDeadline(),
		local:         streamAddr("relay"),
		remote:        streamAddr("cluster/" + cluster),
		stats:         c,
		inBytes:       &c.bytesFrom,
	}
	return s
}

func (s *relayStream) Write(p []byte) (int, error) {
	if err := s.writable(); err != nil {
		return 0, err
	}
	n, err := s.w.Write(p)
	s.stats.bytesTo.Add(uint64(n))
	return n, err
}

// CloseWrite ends the bytes towards the agent; reading goes on.
func (s *relayStream) CloseWrite() error { return s.w.Close() }

// closeGrace is how long Close lets the agent finish a stream after the
// relay's side has ended, before resetting it.
const closeGrace = 5 * time.Second

// Close ends the relay's side like closing a TCP socket: what was written is
// still delivered, followed by the half-close; the stream is reset only if
// the agent has not ended its side within closeGrace. Close does not wait.
func (s *relayStream) Close() error {
	s.closeOnce.Do(func() {
		s.in.close()
		s.w.Close()
		go func() {
			t := time.AfterFunc(closeGrace, s.cancel)
			io.Copy(io.Discard, s.body) // until the agent's END_STREAM, or the reset
			t.Stop()
			s.release()
		}()
	})
	return nil
}

// abort resets the stream at once: something failed.
func (s *relayStream) abort() {
	s.closeOnce.Do(func() {
		s.in.close()
		s.w.CloseWithError(net.ErrClosed)
		s.release()
	})
}

func (s *relayStream) release() {
	s.cancel()
	s.body.Close()
	s.onClose()
}
