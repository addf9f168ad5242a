package tunnel

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/clusterconnect/clusterconnect/internal/h2client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sizedAnswer(lent *atomic.Int32, size int) (*bufferedAnswer, *httptest.ResponseRecorder) {
	rec := httptest.NewRecorder()
	b := &bufferedAnswer{ResponseWriter: rec, lent: lent}
	b.Header().Set("Content-Length", strconv.Itoa(size))
	return b, rec
}

// An agent lends at most maxAnswerBuffers buffers: answers past that are
// written through, and every buffer comes back, a handler that panicked
// included.
func TestAnswerBuffersAreBounded(t *testing.T) {
	var lent atomic.Int32
	var answers []*bufferedAnswer
	for i := range maxAnswerBuffers + 1 {
		b, rec := sizedAnswer(&lent, 1<<20)
		n, err := b.Write(make([]byte, 1000))
		require.NoError(t, err)
		require.Equal(t, 1000, n)
		if i < maxAnswerBuffers {
			assert.Zero(t, rec.Body.Len(), "answer %d is collected", i)
		} else {
			assert.Equal(t, 1000, rec.Body.Len(), "past the bound an answer is written through")
		}
		answers = append(answers, b)
	}
	assert.EqualValues(t, maxAnswerBuffers, lent.Load())
	for _, b := range answers {
		b.free() // as after a panic: nothing sent
	}
	assert.Zero(t, lent.Load())
}

// Small answers and answers of unknown length are never held.
func TestOnlyLargeSizedAnswersAreCollected(t *testing.T) {
	var lent atomic.Int32
	for _, size := range []string{"100", "", "not a number", strconv.Itoa(answerBuffer / 2)} {
		rec := httptest.NewRecorder()
		b := &bufferedAnswer{ResponseWriter: rec, lent: &lent}
		if size != "" {
			b.Header().Set("Content-Length", size)
		}
		b.Write([]byte("hello"))
		assert.Equal(t, "hello", rec.Body.String(), "Content-Length %q", size)
	}
	assert.Zero(t, lent.Load())
}

// Collected writes leave in order, in writes of answerBuffer bytes (whole
// frames of whole TLS records) but the last, and a failed write fails
// every later one.
func TestCollectedAnswerWrites(t *testing.T) {
	var lent atomic.Int32
	w := &countingResponse{ResponseWriter: httptest.NewRecorder()}
	b := &bufferedAnswer{ResponseWriter: w, lent: &lent}
	b.Header().Set("Content-Length", strconv.Itoa(1<<20))
	for range 32 {
		b.Write(make([]byte, 32<<10))
	}
	require.NoError(t, b.send())
	assert.Equal(t, 1<<20, w.bytes)
	require.Len(t, w.sizes, (1<<20+answerBuffer-1)/answerBuffer, "32 KiB writes left as writes of %d bytes", answerBuffer)
	for _, n := range w.sizes[:len(w.sizes)-1] {
		assert.Equal(t, answerBuffer, n, "each write but the last is a full buffer: %v", w.sizes)
	}
	assert.Equal(t, 2*answerBuffer, w.sizes[0]+w.sizes[1], "two frames of four whole TLS records each")
	assert.Equal(t, 8*h2client.TLSRecord, answerBuffer+2*9)

	// A write of more than a buffer, with some collected: the buffer is
	// filled and sent, whole buffers go as they are, the rest waits.
	w.sizes = nil
	b.Write(make([]byte, 100))
	b.Write(make([]byte, 2*answerBuffer+50))
	assert.Equal(t, []int{answerBuffer, answerBuffer}, w.sizes)
	require.NoError(t, b.send())
	assert.Equal(t, []int{answerBuffer, answerBuffer, 150}, w.sizes)

	w.fail = errors.New("gone")
	_, err := b.Write(make([]byte, answerBuffer))
	assert.ErrorIs(t, err, w.fail)
	w.fail = nil
	_, err = b.Write([]byte("x"))
	assert.Error(t, err, "after a failed write nothing more is written")
	b.free()
	assert.Zero(t, lent.Load())
}

type countingResponse struct {
	http.ResponseWriter
	sizes []int // of each write
	bytes int
	fail  error
}

func (c *countingResponse) Write(p []byte) (int, error) {
	if c.fail != nil {
		return 0, c.fail
	}
	c.sizes = append(c.sizes, len(p))
	c.bytes += len(p)
	return c.ResponseWriter.Write(p)
}
