package reattach_test

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/clusterconnect/clusterconnect/sessions/reattach"
)

// BenchmarkCopy moves 1 MiB per op one way over loopback TCP: "raw" on
// the TCP connection itself, "session" through a session on it (frames,
// the window kept for resending, acknowledgements). The difference is
// what a session costs an exec's or port-forward's bytes at each end.
func BenchmarkCopy(b *testing.B) {
	for _, mode := range []string{"raw", "session"} {
		b.Run(mode, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			srv := reattach.NewServer(nil)
			defer srv.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				if mode == "raw" {
					accepted <- nc
					return
				}
				go srv.Serve(nc, "bench")
				c, err := srv.Accept()
				if err == nil {
					accepted <- c
				}
			}()
			var w net.Conn
			dial := func(ctx context.Context, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
			}
			if mode == "raw" {
				w, err = dial(context.Background(), "")
			} else {
				w, err = reattach.Dial(context.Background(), dial, nil)
			}
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			r := <-accepted
			defer r.Close()
			buf := make([]byte, 1<<20)
			done := make(chan error)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				for range b.N {
					if _, err := w.Write(buf); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			rbuf := make([]byte, 32<<10)
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(r, int64(b.N)*int64(len(buf))), rbuf); err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
