package httpx

import (
	"bufio"
	"net"
	"net/http"
	"sync/atomic"
)

// Recorder notes the status a handler answered with and the bytes it
// wrote, and passes everything else through: Flush, Hijack, and deadlines
// through http.ResponseController (Unwrap).
type Recorder struct {
	http.ResponseWriter
	// Status is the first final status written: 200 when the handler
	// wrote a body without one, 101 when it hijacked the connection
	// (to write its own status line, as upgrades do); 0 until then.
	Status int
	// Written counts the body bytes written.
	Written int64
	// Count, if set, is added every write's bytes as they go, for
	// counters read while a long answer (a watch) is still streaming.
	Count *atomic.Uint64
}

// WriteHeader notes the first final status.
func (r *Recorder) WriteHeader(code int) {
	if r.Status == 0 && code >= 200 {
		r.Status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *Recorder) Write(p []byte) (int, error) {
	if r.Status == 0 {
		r.Status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.Written += int64(n)
	if r.Count != nil {
		r.Count.Add(uint64(n))
	}
	return n, err
}

// Flush is here as well as through Unwrap: code that asserts
// http.Flusher (older ReverseProxy paths) finds it.
func (r *Recorder) Flush() { http.NewResponseController(r.ResponseWriter).Flush() }

// Hijack hands the connection over; the handler then writes its own
// status line, so a hijacked request counts as switched.
func (r *Recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.Status == 0 {
		r.Status = http.StatusSwitchingProtocols
	}
	return conn, brw, err
}

// Unwrap gives http.ResponseController the writer underneath.
func (r *Recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
