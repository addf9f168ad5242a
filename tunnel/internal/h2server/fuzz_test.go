//lint:file-ignore SA1019 x/net/http2's Framer writes the seed corpus's frames.

package h2server_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/clusterconnect/clusterconnect/tunnel/internal/h2server"
)

// seedFrames is a client's preface and frames, written with x/net's
// Framer: what the fuzzer starts from.
func seedFrames(write func(fr *http2.Framer)) []byte {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	write(fr)
	return b.Bytes()
}

// Whatever bytes a client sends, the server neither panics nor hangs: it
// answers or closes, and the connection ends when the client's side does.
func FuzzServe(f *testing.F) {
	get := headerBlock(":method", "GET", ":scheme", "https", ":path", "/x?y=1", ":authority", "agent", "audit-id", "abc")
	put := headerBlock(":method", "PUT", ":scheme", "https", ":path", "/up", ":authority", "agent", "content-length", "5", "trailer", "x-sum")
	connect := headerBlock(":method", "CONNECT", ":authority", "tunnel.invalid", "clusterconnect-stream", "raw")
	f.Add(seedFrames(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get, EndStream: true, EndHeaders: true})
	}))
	f.Add(seedFrames(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: put, EndHeaders: true})
		fr.WriteData(1, false, []byte("hel"))
		fr.WriteDataPadded(1, false, []byte("lo"), []byte{0, 0, 0})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: headerBlock("x-sum", "1"), EndStream: true, EndHeaders: true})
	}))
	f.Add(seedFrames(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: connect, EndHeaders: true})
		fr.WriteData(1, false, []byte("raw bytes"))
		fr.WriteRSTStream(1, http2.ErrCodeCancel)
		fr.WriteWindowUpdate(0, 1000)
		fr.WritePing(false, [8]byte{1})
		fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	}))
	f.Add(seedFrames(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: get[:3], EndStream: true})
		fr.WriteContinuation(1, true, get[3:])
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: get, EndHeaders: true})
		fr.WriteData(3, true, nil)
	}))
	f.Add(seedFrames(func(fr *http2.Framer) {
		// The server's SETTINGS and a round-trip PING answered, then a
		// body read as fast as it comes: its window grows.
		fr.WriteSettingsAck()
		fr.WritePing(true, [8]byte{'r', 't', 't', 0, 0, 0, 0, 1})
		post := headerBlock(":method", "POST", ":scheme", "https", ":path", "/up", ":authority", "agent")
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: post, EndHeaders: true})
		for range 8 {
			fr.WriteData(1, false, make([]byte, 512))
		}
		fr.WriteData(1, true, nil)
	}))
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, cli := net.Pipe()
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(w, r.Body)
			w.Header().Set("X-Sum", r.Trailer.Get("X-Sum"))
		})
		s := h2server.New(srv, &h2server.Config{MaxUploadBufferPerStream: 1 << 10, MaxUploadBufferPerConnection: 64 << 10, MaxHeaderBytes: 4 << 10}, h)
		go s.Serve()
		go io.Copy(io.Discard, cli)
		cli.Write(in)
		cli.Close()
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the server did not end with its client")
		}
	})
}
