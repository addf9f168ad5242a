package reattach

// buffer is a byte queue that keeps its array while bytes flow through
// it: what is taken from the front is reclaimed by moving the rest down
// once it is half the array, not by growing a new one.
type buffer struct {
	b   []byte
	off int
}

func (q *buffer) len() int      { return len(q.b) - q.off }
func (q *buffer) bytes() []byte { return q.b[q.off:] }

// write appends p.
func (q *buffer) write(p []byte) {
	if q.off > 0 && q.off >= len(q.b)/2 {
		n := copy(q.b, q.b[q.off:])
		q.b, q.off = q.b[:n], 0
	}
	q.b = append(q.b, p...)
}

// drop takes n bytes from the front.
func (q *buffer) drop(n int) {
	q.off += n
	if q.off == len(q.b) {
		q.b, q.off = q.b[:0], 0
	}
}

// release lets the array go if the queue is empty: a session that went
// quiet holds no memory for its bulk.
func (q *buffer) release() {
	if q.len() == 0 {
		q.b, q.off = nil, 0
	}
}
