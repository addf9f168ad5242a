package sessions

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

type chunked struct {
	b     []byte
	chunk int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, errors.New("broken")
	}
	n := copy(p[:min(len(p), c.chunk)], c.b)
	c.b = c.b[n:]
	return n, nil
}

func (c *chunked) Close() error { return nil }

// Whatever a broken watch stream carried, in whatever chunks, the client
// gets exactly its complete events, in order, then one ERROR event.
func FuzzWatchBody(f *testing.F) {
	f.Add([]byte("{\"type\":\"ADDED\"}\n{\"type\":\"MOD"), uint8(3), false)
	f.Add([]byte("\x00\x00\x00\x02hi\x00\x00\x00\x05abc"), uint8(1), true)
	f.Add([]byte("\xff\xff\xff\xffx"), uint8(7), true)
	f.Add([]byte("\n\n\n"), uint8(2), false)
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, proto bool) {
		var fr framing = jsonFraming{}
		want := in[:bytes.LastIndexByte(in, '\n')+1]
		if proto {
			fr = protoFraming{}
			want = in[:frames(in)]
		}
		b := &watchBody{rc: &chunked{b: bytes.Clone(in), chunk: int(chunk%64) + 1}, events: fr}
		got, err := io.ReadAll(b)
		if err != nil {
			t.Fatalf("the body failed instead of ending: %v", err)
		}
		ev := fr.errorEvent(http.StatusServiceUnavailable, "ServiceUnavailable", "the watch's connection to the cluster broke (broken); watch again", false)
		if !bytes.Equal(got, append(bytes.Clone(want), ev...)) {
			t.Fatalf("got %q, want the complete events %q and the ERROR event", got, want)
		}
	})
}

// frames is how many bytes of b are whole length-prefixed frames, counted
// another way than protoFraming does.
func frames(b []byte) int {
	n := 0
	for {
		if len(b)-n < 4 {
			return n
		}
		l := uint64(b[n])<<24 | uint64(b[n+1])<<16 | uint64(b[n+2])<<8 | uint64(b[n+3])
		if uint64(len(b)-n-4) < l {
			return n
		}
		n += 4 + int(l)
	}
}

// An event that never ends (an agent that sends a line without end) is
// held to maxHeld and then passed on as it comes: what a watch holds is
// bounded, and nothing is lost.
func TestHeldEventIsBounded(t *testing.T) {
	in := bytes.Repeat([]byte("x"), maxHeld+3<<20)
	src := &chunked{b: bytes.Clone(in), chunk: 64 << 10}
	b := &watchBody{rc: eofAfter{src}, events: jsonFraming{}}
	var got []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := b.Read(buf)
		got = append(got, buf[:n]...)
		if len(b.held) > maxHeld+len(buf) {
			t.Fatalf("held %d bytes", len(b.held))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, in) {
		t.Fatalf("got %d bytes of %d", len(got), len(in))
	}
}

// eofAfter ends a chunked reader cleanly.
type eofAfter struct{ c *chunked }

func (e eofAfter) Read(p []byte) (int, error) {
	if len(e.c.b) == 0 {
		return 0, io.EOF
	}
	return e.c.Read(p)
}

func (e eofAfter) Close() error { return nil }
