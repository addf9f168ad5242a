package reattach_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/clusterconnect/clusterconnect/sessions/reattach"
)

// FuzzCarrier feeds a server whatever a caller sends on a carrier, first
// as the hello and then, after a valid hello for a new session, as the
// session's frames: nothing panics, nothing waits for ever, and the
// session's reader sees only bytes that DATA frames carried.
func FuzzCarrier(f *testing.F) {
	for _, seed := range [][]byte{
		{},
		{4, 0, 0, 3, 'a', 'b', 'c'},
		{4, 0, 0, 3, 'a', 'b', 'c', 6, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 3},
		{5, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1},
		{7, 0, 0, 0, 4, 0xff, 0xff, 0xff},
		{1, 0, 0, 24},
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, in []byte, afterHello bool) {
		synctest.Test(t, func(t *testing.T) {
			srv := reattach.NewServer(nil)
			other, mine := net.Pipe()
			go srv.Serve(mine, "caller")
			if afterHello {
				in = append(append([]byte{1, 0, 0, 24}, make([]byte, 24)...), in...)
			}
			go func() {
				other.Write(in)
			}()
			go io.Copy(io.Discard, other)
			var got []byte
			if afterHello {
				session, err := srv.Accept()
				if err != nil {
					t.Fatal(err)
				}
				session.SetReadDeadline(time.Now().Add(time.Second))
				got, _ = io.ReadAll(session)
				if !carried(in[28:], got) {
					t.Fatalf("read %q, which no DATA frame carried", got)
				}
			}
			time.Sleep(time.Second)
			other.Close()
			srv.Close()
			time.Sleep(2 * reattach.DefaultGrace)
			synctest.Wait()
		})
	})
}

// carried reports whether got is what the leading DATA frames of in
// carry, in order.
func carried(in, got []byte) bool {
	var data []byte
	for len(in) >= 4 {
		n := int(in[1])<<16 | int(in[2])<<8 | int(in[3])
		if len(in) < 4+n {
			break
		}
		if in[0] == 4 {
			data = append(data, in[4:4+n]...)
		}
		in = in[4+n:]
	}
	return bytes.HasPrefix(data, got)
}
