package tunnel

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// record is a TLS record of type typ around payload.
func record(typ byte, payload []byte) []byte {
	return append([]byte{typ, 3, 3, byte(len(payload) >> 8), byte(len(payload))}, payload...)
}

// secondHello is what a client sends after a HelloRetryRequest: a
// ChangeCipherSpec, then a ClientHello of n bytes of body split over two
// handshake records.
func secondHello(n int) []byte {
	msg := append([]byte{1, byte(n >> 16), byte(n >> 8), byte(n)}, make([]byte, n)...)
	b := record(20, []byte{1})
	b = append(b, record(22, msg[:3])...) // a record ending inside the message's header
	return append(b, record(22, msg[3:])...)
}

func TestHelloScanFindsTheWholeClientHello(t *testing.T) {
	for _, n := range []int{0, 1, 300, 1500} {
		b := secondHello(n)
		// Byte by byte: whole only at the last byte.
		var h helloScan
		for i := range b {
			assert.Equal(t, i == len(b)-1, h.feed(b[i:i+1]), "%d bytes of body, byte %d of %d", n, i, len(b))
		}
		var all helloScan
		assert.True(t, all.feed(b), "%d bytes of body, all at once", n)
		var short helloScan
		assert.False(t, short.feed(b[:len(b)-1]), "%d bytes of body, but for the last", n)
	}
}

// Fed in any pieces, the scan says the ClientHello is whole at the same
// byte as when fed byte by byte, and never fails.
func FuzzHelloScan(f *testing.F) {
	f.Add(secondHello(300), uint8(7))
	f.Add(secondHello(0), uint8(1))
	f.Add(record(22, []byte{1, 0, 0, 5, 1, 2}), uint8(3))
	f.Add(record(21, []byte{2, 40}), uint8(2))
	f.Add([]byte{22, 3, 3, 0, 0, 22, 3, 3, 0, 4, 1, 0, 0, 0}, uint8(5))
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		at := -1 // the byte at which it is whole, byte by byte
		var one helloScan
		for i := range b {
			if one.feed(b[i : i+1]) {
				at = i
				break
			}
		}
		n := int(step)%16 + 1
		var h helloScan
		for i := 0; i < len(b); i += n {
			end := min(i+n, len(b))
			if h.feed(b[i:end]) {
				if at < i || at >= end {
					t.Fatalf("whole in the piece [%d,%d), byte by byte at %d", i, end, at)
				}
				return
			}
		}
		if at >= 0 {
			t.Fatalf("never whole in pieces of %d, byte by byte at %d", n, at)
		}
	})
}
