package reattach

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame types (tunnel/PROTOCOL.md, section 6).
const (
	frameHello   byte = 1 // client → server: session ID (zero: new), bytes received
	frameWelcome byte = 2 // server → client: session ID, bytes received, agent ID
	frameRefused byte = 3 // server → client: why, then the carrier closes
	frameData    byte = 4 // bytes of the session
	frameAck     byte = 5 // bytes consumed; flag: END received
	frameEnd     byte = 6 // the sender is closed; total bytes it wrote
	framePing    byte = 7 // nothing to say, still here
)

// maxPayload bounds a frame's payload: a DATA frame carries at most this
// much, and a reader refuses anything longer before reading it.
const maxPayload = 32 << 10

// headerLen is a frame's header: the type, then the payload's length in
// three bytes, big-endian.
const headerLen = 4

// ErrProtocol is returned for bytes that do not follow PROTOCOL.md: the
// carrier that brought them is dropped.
var ErrProtocol = errors.New("reattach: protocol violation")

// appendFrame appends one frame to b.
func appendFrame(b []byte, typ byte, payload ...[]byte) []byte {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	b = append(b, typ, byte(n>>16), byte(n>>8), byte(n))
	for _, p := range payload {
		b = append(b, p...)
	}
	return b
}

// readFrame reads one frame into buf (grown as needed, up to maxPayload)
// and returns its type and payload, which aliases buf.
func readFrame(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	if n > maxPayload {
		return 0, nil, fmt.Errorf("%w: a frame of %d bytes (at most %d)", ErrProtocol, n, maxPayload)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return h[0], buf, nil
}

// SessionID names a session; the zero ID asks for a new one.
type SessionID [16]byte

// hello is the first frame on a carrier, from the client; welcome is the
// server's answer. Received is how many bytes of the session the sender
// has received, where the other side resumes sending.
type hello struct {
	ID       SessionID
	Received uint64
}

type welcome struct {
	hello
	AgentID string
}

const helloLen = 16 + 8

// maxAgentID bounds the agent ID a welcome carries.
const maxAgentID = 253

func (h hello) append(b []byte, typ byte) []byte {
	return appendFrame(b, typ, h.ID[:], binary.BigEndian.AppendUint64(nil, h.Received))
}

func parseHello(p []byte) (hello, error) {
	if len(p) != helloLen {
		return hello{}, fmt.Errorf("%w: a hello of %d bytes", ErrProtocol, len(p))
	}
	var h hello
	copy(h.ID[:], p)
	h.Received = binary.BigEndian.Uint64(p[16:])
	return h, nil
}

func (w welcome) append(b []byte) []byte {
	return appendFrame(b, frameWelcome, w.ID[:], binary.BigEndian.AppendUint64(nil, w.Received), []byte(w.AgentID))
}

func parseWelcome(p []byte) (welcome, error) {
	if len(p) < helloLen || len(p) > helloLen+maxAgentID {
		return welcome{}, fmt.Errorf("%w: a welcome of %d bytes", ErrProtocol, len(p))
	}
	h, _ := parseHello(p[:helloLen])
	return welcome{hello: h, AgentID: string(p[helloLen:])}, nil
}

// parseOffset reads the payload of an ACK (offset, flags) or END (offset).
func parseOffset(p []byte, withFlags bool) (off uint64, flags byte, err error) {
	want := 8
	if withFlags {
		want = 9
	}
	if len(p) != want {
		return 0, 0, fmt.Errorf("%w: a %d-byte offset frame", ErrProtocol, len(p))
	}
	if withFlags {
		flags = p[8]
	}
	return binary.BigEndian.Uint64(p), flags, nil
}

// ackEnd, in an ACK's flags, says the sender has received the END.
const ackEnd byte = 1
