package tunnel

import (
	"encoding/binary"
	"net"
	"net/http"
	"sync"
)

// agentStream is the agent's end of a raw stream, as a net.Conn.
type agentStream struct {
	rawConn
	w  http.ResponseWriter
	rc *http.ResponseController

	mu          sync.Mutex // serializes writes and the half-close
	writeClosed bool
	hdr         [4]byte

	done chan struct{} // closed by Close: the handler serving the stream returns
}

func newAgentStream(w http.ResponseWriter, r *http.Request, c *counters) *agentStream {
	s := &agentStream{w: w, rc: http.NewResponseController(w), done: make(chan struct{})}
	s.rawConn = rawConn{
		in:            newDeadlineReader(r.Body),
		writeDeadline: newDeadline(),
		local:         streamAddr("agent"),
		remote:        streamAddr("relay"),
		stats:         c,
		inBytes:       &c.bytesTo,
	}
	return s
}

func (s *agentStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writeClosed {
		return 0, net.ErrClosed
	}
	if err := s.writable(); err != nil {
		return 0, err
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxFrame)]
		binary.BigEndian.PutUint32(s.hdr[:], uint32(len(chunk)))
		if _, err := s.w.Write(s.hdr[:]); err != nil {
			return written, err
		}
		n, err := s.w.Write(chunk)
		written += n
		s.stats.bytesFrom.Add(uint64(n))
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, s.rc.Flush()
}

// CloseWrite sends the half-close frame; reading goes on.
func (s *agentStream) CloseWrite() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writeClosed {
		return nil
	}
	s.writeClosed = true
	binary.BigEndian.PutUint32(s.hdr[:], 0)
	if _, err := s.w.Write(s.hdr[:]); err != nil {
		return err
	}
	return s.rc.Flush()
}

// Close ends the stream: the handler serving it returns.
func (s *agentStream) Close() error {
	s.closeOnce.Do(func() {
		s.in.close()
		close(s.done)
	})
	return nil
}

// oneConnListener hands out a single conn, then blocks Accept until that
// conn is closed, so http.Server.Serve returns when the conn is done.
type oneConnListener struct {
	conn *agentStream
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.conn.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.local }
