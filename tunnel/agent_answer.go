package tunnel

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/clusterconnect/clusterconnect/internal/h2client"
)

// A reverse proxy, as the agent's handler usually is, writes 32 KiB at a
// time: each write a DATA frame of its own, two TLS records and a
// nine-byte third, and a write to the connection. The agent collects a
// large answer of known length into writes of answerBuffer bytes instead,
// two frames of whole records each (BENCHMARKS.md, "The agent collects a
// large answer's writes", measured when x/net's server also cost two
// hand-offs between goroutines per write). Answers of unknown length (a
// watch, logs -f) and small ones go through as they are written; a Flush
// sends what is collected.
const (
	// answerBuffer is two of the DATA frames the relay takes, each four
	// whole TLS records: collected writes are sent full, so that no
	// frame but an answer's last ends in a record of its own.
	answerBuffer = 2 * h2client.DataFrameSize
	// maxAnswerBuffers is how many buffers an agent lends at once (16
	// MiB): past it, answers are written through as before, so that many
	// downloads whose clients stop reading hold no more of the agent.
	maxAnswerBuffers = 128
)

var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, answerBuffer); return &b }}

// bufferedAnswer is the ResponseWriter a tunnel stream's handler gets.
type bufferedAnswer struct {
	http.ResponseWriter
	lent *atomic.Int32 // the agent's buffers out

	wroteHeader bool
	sized       bool // Content-Length over half a buffer: collect
	buf         *[]byte
	err         error // the first failed write: every later one fails
}

// WriteHeader notes whether the answer is to be collected.
func (b *bufferedAnswer) WriteHeader(code int) {
	if code >= 200 && !b.wroteHeader {
		b.wroteHeader = true
		n, err := strconv.ParseInt(b.Header().Get("Content-Length"), 10, 64)
		b.sized = err == nil && n > answerBuffer/2
	}
	b.ResponseWriter.WriteHeader(code)
}

// Write collects p for a large answer of known length, or writes it.
func (b *bufferedAnswer) Write(p []byte) (int, error) {
	if !b.wroteHeader {
		b.WriteHeader(http.StatusOK)
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.sized && b.buf == nil {
		if b.lent.Add(1) > maxAnswerBuffers {
			b.lent.Add(-1)
			b.sized = false
		} else {
			b.buf = answerBufs.Get().(*[]byte)
		}
	}
	if !b.sized {
		return b.write(p)
	}
	n := 0
	for len(p) > 0 {
		if len(*b.buf) == 0 && len(p) >= answerBuffer {
			// Whole buffers' worth go as they are.
			k, err := b.write(p[:len(p)/answerBuffer*answerBuffer])
			n += k
			if err != nil {
				return n, err
			}
			p = p[k:]
			continue
		}
		k := min(len(p), answerBuffer-len(*b.buf))
		*b.buf = append(*b.buf, p[:k]...)
		n, p = n+k, p[k:]
		if len(*b.buf) == answerBuffer {
			if err := b.send(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (b *bufferedAnswer) write(p []byte) (int, error) {
	n, err := b.ResponseWriter.Write(p)
	if err != nil {
		b.err = err
	}
	return n, err
}

// send writes what is collected.
func (b *bufferedAnswer) send() error {
	if b.err != nil {
		return b.err
	}
	if b.buf == nil || len(*b.buf) == 0 {
		return nil
	}
	_, err := b.write(*b.buf)
	*b.buf = (*b.buf)[:0]
	return err
}

// FlushError sends what is collected, then has the server flush.
func (b *bufferedAnswer) FlushError() error {
	if err := b.send(); err != nil {
		return err
	}
	return http.NewResponseController(b.ResponseWriter).Flush()
}

// Flush is FlushError for callers that assert http.Flusher.
func (b *bufferedAnswer) Flush() { b.FlushError() }

// Unwrap gives http.ResponseController the writer underneath.
func (b *bufferedAnswer) Unwrap() http.ResponseWriter { return b.ResponseWriter }

// free gives the buffer back; what it held is dropped (the handler
// returned, and finished with send, or panicked).
func (b *bufferedAnswer) free() {
	if b.buf != nil {
		*b.buf = (*b.buf)[:0]
		answerBufs.Put(b.buf)
		b.buf = nil
		b.lent.Add(-1)
	}
}
