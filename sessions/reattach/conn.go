package reattach

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Errors a Conn's Read and Write return once the session is over, besides
// io.EOF (the other side closed, everything it wrote has been read) and
// net.ErrClosed (this side closed).
var (
	// ErrLost: no carrier came back within the grace period.
	ErrLost = errors.New("reattach: the session's connection was lost and not re-attached in time")
	// ErrRefused: the server no longer knows the session (it ended or
	// expired there), or the caller is not the one that opened it.
	ErrRefused = errors.New("reattach: the server refused to re-attach the session")
	// ErrPeerClosed is what a Write returns after the other side closed.
	ErrPeerClosed = errors.New("reattach: the other side closed the session")
)

// A Conn is one side of a session: a net.Conn whose bytes survive the loss
// of the carrier under it. What it writes is kept until the other side
// acknowledges it (at most Config.Window bytes: Write waits beyond that),
// and sent again on the next carrier from where the other side says it
// stopped receiving; what it reads is never seen twice.
type Conn struct {
	cfg     Config
	id      SessionID
	agentID string
	reqID   string // the opening carrier's request ID, on a server's side
	addr    net.Addr
	peer    net.Addr

	// reattach, if set, is started when the carrier is lost (the client
	// dials again); done, if set, hears once that the session is over.
	reattach func()
	done     func()

	mu      sync.Mutex
	wake    chan struct{} // closed and replaced at a change, if waited on
	waiting int           // goroutines waiting on wake
	carrier *carrier
	lostAt  time.Time // when the last carrier was lost; zero while attached
	expiry  *time.Timer

	sbuf    buffer // written, not yet acknowledged, from offset sacked
	sacked  uint64
	ssent   uint64 // sent on the carrier up to here
	closing bool   // Close was called: END follows the data
	endSent bool   // on the current carrier

	rbuf    buffer // received, not yet read
	rrecv   uint64 // received in all
	rread   uint64 // read in all
	racked  uint64 // acknowledged up to here
	ackDue  bool
	peerEnd bool // END received: acknowledge it, then the session is over

	err error // why the session is over; nil while it runs

	rdl, wdl time.Time
}

// carrier is one byte stream under a session.
type carrier struct {
	nc net.Conn
	br *bufio.Reader
}

func newConn(cfg Config, id SessionID, first net.Conn) *Conn {
	return &Conn{
		cfg:  cfg,
		id:   id,
		addr: sessionAddr{id, first.LocalAddr()},
		peer: sessionAddr{id, first.RemoteAddr()},
		wake: make(chan struct{}),
	}
}

// ID is the session's ID.
func (c *Conn) ID() SessionID { return c.id }

// AgentID is the name the server gave itself in the session's welcome
// (ServerConfig.AgentID): where the session lives.
func (c *Conn) AgentID() string { return c.agentID }

// RequestID is, on a server's side, the request ID (Audit-ID) the
// carrier that opened the session came with: the relay's ID for the
// request the session carries, which the server should give that
// request rather than one its client chose. "" on a client's side.
func (c *Conn) RequestID() string { return c.reqID }

// notify wakes every waiter; c.mu held. With nobody waiting it costs
// nothing: most changes come while both sides are busy.
func (c *Conn) notify() {
	if c.waiting > 0 {
		close(c.wake)
		c.wake = make(chan struct{})
		c.waiting = 0
	}
}

// wait releases c.mu until something changes or the deadline passes, and
// reports false for the deadline; c.mu held.
func (c *Conn) wait(deadline time.Time) bool {
	ch := c.wake
	c.waiting++
	c.mu.Unlock()
	defer c.mu.Lock()
	if deadline.IsZero() {
		<-ch
		return true
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// attach makes nc the session's carrier, the other side having received
// peerReceived bytes, and starts its reader. The caller has already
// exchanged hello and welcome on it.
func (c *Conn) attach(nc net.Conn, br *bufio.Reader, peerReceived uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		nc.Close()
		return c.err
	}
	if peerReceived < c.sacked || peerReceived > c.sacked+uint64(c.sbuf.len()) {
		err := fmt.Errorf("%w: the other side has %d bytes, this side kept %d to %d", ErrProtocol, peerReceived, c.sacked, c.sacked+uint64(c.sbuf.len()))
		nc.Close()
		c.finishLocked(err)
		return err
	}
	if old := c.carrier; old != nil {
		old.nc.Close()
	}
	car := &carrier{nc: nc, br: br}
	c.carrier = car
	c.lostAt = time.Time{}
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	c.trimLocked(peerReceived)
	c.ssent = peerReceived
	c.endSent = false
	c.ackDue = c.rread > c.racked || c.peerEnd
	c.notify()
	go c.readLoop(car)
	return nil
}

// lose drops car if it is still the carrier: the session waits for
// another within the grace period.
func (c *Conn) lose(car *carrier) {
	c.mu.Lock()
	defer c.mu.Unlock()
	car.nc.Close()
	if c.carrier != car || c.err != nil {
		return
	}
	c.carrier = nil
	if c.peerEnd {
		// Everything the other side will ever send is here; if it did not
		// hear our acknowledgement, it will find the session gone.
		c.finishLocked(io.EOF)
		return
	}
	c.lostAt = time.Now()
	c.expiry = time.AfterFunc(c.cfg.Grace, c.expire)
	c.notify()
	if c.reattach != nil {
		go c.reattach()
	}
}

func (c *Conn) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.carrier == nil && c.err == nil && !c.lostAt.IsZero() && time.Since(c.lostAt) >= c.cfg.Grace {
		c.finishLocked(ErrLost)
	}
}

// detached reports whether the session has no carrier now.
func (c *Conn) detached() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.carrier == nil && c.err == nil
}

// received is how many bytes this side has received.
func (c *Conn) received() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rrecv
}

// finish ends the session for err; c.mu held.
func (c *Conn) finishLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	if c.carrier != nil {
		c.carrier.nc.Close()
		c.carrier = nil
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.sbuf = buffer{}
	c.notify()
	if c.done != nil {
		go c.done()
	}
}

// trimLocked forgets what the other side has acknowledged up to off.
func (c *Conn) trimLocked(off uint64) {
	if off <= c.sacked {
		return
	}
	n := int(off - c.sacked)
	c.sbuf.drop(n)
	c.sacked = off
}

func (c *Conn) readLoop(car *carrier) {
	var buf []byte
	for {
		car.nc.SetReadDeadline(time.Now().Add(c.cfg.DeadAfter))
		typ, p, err := readFrame(car.br, buf)
		if err != nil {
			c.lose(car)
			return
		}
		buf = p[:0]
		if err := c.take(car, typ, p); err != nil {
			c.mu.Lock()
			c.finishLocked(err)
			c.mu.Unlock()
			return
		}
	}
}

// take applies one frame that arrived on car.
func (c *Conn) take(car *carrier, typ byte, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.carrier != car {
		return nil // a carrier already replaced: its last frames are moot
	}
	switch typ {
	case frameData:
		if c.peerEnd || c.rbuf.len()+len(p) > c.cfg.Window {
			return fmt.Errorf("%w: %d bytes past the window", ErrProtocol, c.rbuf.len()+len(p)-c.cfg.Window)
		}
		if c.err == nil {
			c.rbuf.write(p)
		}
		c.rrecv += uint64(len(p))
	case frameAck:
		off, flags, err := parseOffset(p, true)
		if err != nil {
			return err
		}
		if off > c.sacked+uint64(c.sbuf.len()) {
			return fmt.Errorf("%w: an acknowledgement of %d bytes; %d were written", ErrProtocol, off, c.sacked+uint64(c.sbuf.len()))
		}
		c.trimLocked(off)
		if flags&ackEnd != 0 && c.closing {
			c.finishLocked(net.ErrClosed)
		}
	case frameEnd:
		off, _, err := parseOffset(p, false)
		if err != nil {
			return err
		}
		if off != c.rrecv {
			return fmt.Errorf("%w: END at %d after %d bytes", ErrProtocol, off, c.rrecv)
		}
		c.peerEnd, c.ackDue = true, true
	case framePing:
	default:
		return fmt.Errorf("%w: frame type %d on a session", ErrProtocol, typ)
	}
	c.notify()
	return nil
}

// writeLoop sends what is due on the current carrier until the session
// is over: data not yet sent there, acknowledgements, END, and a ping
// when nothing else went for PingEvery.
func (c *Conn) writeLoop() {
	var out []byte
	c.mu.Lock()
	defer c.mu.Unlock()
	lastSent := time.Now()
	for c.err == nil {
		car := c.carrier
		if car == nil {
			c.wait(time.Time{})
			continue
		}
		finished := false
		if c.dueLocked() {
			out, finished = c.framesLocked(out[:0])
		} else if c.wait(lastSent.Add(c.cfg.PingEvery)) || c.carrier != car || c.dueLocked() {
			continue
		} else {
			// Quiet for PingEvery: the bulk buffers go until bytes flow.
			c.sbuf.release()
			c.rbuf.release()
			out = nil
			out = appendFrame(out[:0], framePing)
		}
		c.sendLocked(car, out)
		lastSent = time.Now()
		if finished {
			c.finishLocked(io.EOF)
		}
	}
}

// sendLocked writes out on car without holding c.mu.
func (c *Conn) sendLocked(car *carrier, out []byte) {
	c.mu.Unlock()
	car.nc.SetWriteDeadline(time.Now().Add(c.cfg.DeadAfter))
	_, err := car.nc.Write(out)
	if err != nil {
		c.lose(car)
	}
	c.mu.Lock()
}

// dueLocked reports whether there is something to send.
func (c *Conn) dueLocked() bool {
	if c.ackDue || c.ssent < c.sacked+uint64(c.sbuf.len()) {
		return true
	}
	return c.closing && !c.endSent && !c.peerEnd
}

// maxBatch bounds what one write to the carrier carries.
const maxBatch = 8 * maxPayload

// framesLocked appends the frames due now. finished: an acknowledgement
// of the other side's END is among them, after which the session is over.
func (c *Conn) framesLocked(out []byte) ([]byte, bool) {
	finished := false
	if c.ackDue {
		flags := byte(0)
		if c.peerEnd {
			flags, finished = ackEnd, true
		}
		out = appendFrame(out, frameAck, binary.BigEndian.AppendUint64(nil, c.rread), []byte{flags})
		c.racked, c.ackDue = c.rread, false
	}
	end := c.sacked + uint64(c.sbuf.len())
	kept := c.sbuf.bytes()
	for c.ssent < end && len(out) < maxBatch {
		from := int(c.ssent - c.sacked)
		n := min(len(kept)-from, maxPayload)
		out = appendFrame(out, frameData, kept[from:from+n])
		c.ssent += uint64(n)
	}
	if c.ssent == end && c.closing && !c.endSent && !c.peerEnd {
		out = appendFrame(out, frameEnd, binary.BigEndian.AppendUint64(nil, end))
		c.endSent = true
	}
	return out, finished
}

// Read reads what the other side wrote; across carriers, nothing twice
// and nothing left out.
func (c *Conn) Read(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.closing || errors.Is(c.err, net.ErrClosed) {
			return 0, net.ErrClosed
		}
		if c.rbuf.len() > 0 {
			n := copy(b, c.rbuf.bytes())
			c.rbuf.drop(n)
			c.rread += uint64(n)
			if c.rread-c.racked >= uint64(c.cfg.Window/4) {
				c.ackDue = true
				c.notify()
			}
			return n, nil
		}
		if c.peerEnd {
			return 0, io.EOF
		}
		if c.err != nil {
			return 0, c.err
		}
		if !c.rdl.IsZero() && !time.Now().Before(c.rdl) {
			return 0, os.ErrDeadlineExceeded
		}
		c.wait(c.rdl)
	}
}

// Write keeps b to send it, waiting while Window bytes are not yet
// acknowledged. It returns once b is kept, not once it has arrived.
func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for len(b) > 0 {
		switch {
		case c.closing:
			return n, net.ErrClosed
		case c.peerEnd:
			return n, ErrPeerClosed
		case c.err != nil:
			return n, c.err
		case !c.wdl.IsZero() && !time.Now().Before(c.wdl):
			return n, os.ErrDeadlineExceeded
		}
		room := c.cfg.Window - c.sbuf.len()
		if room <= 0 {
			c.wait(c.wdl)
			continue
		}
		k := min(room, len(b))
		c.sbuf.write(b[:k])
		b, n = b[k:], n+k
		c.notify()
	}
	return n, nil
}

// Close ends the session: what was written is still delivered (within
// the grace period, across carriers), then the other side reads io.EOF.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.err != nil {
		return nil
	}
	c.closing = true
	c.rbuf = buffer{}
	if c.peerEnd {
		c.finishLocked(net.ErrClosed)
	}
	c.notify()
	return nil
}

// LocalAddr names the session and this side of its first carrier.
func (c *Conn) LocalAddr() net.Addr { return c.addr }

// RemoteAddr names the session and the other side of its first carrier.
func (c *Conn) RemoteAddr() net.Addr { return c.peer }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds Read's wait, as net.Conn's.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rdl = t
	c.notify()
	return nil
}

// SetWriteDeadline bounds Write's wait for room, as net.Conn's.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wdl = t
	c.notify()
	return nil
}

// sessionAddr is a session's address: its ID and a carrier's address.
type sessionAddr struct {
	id SessionID
	at net.Addr
}

func (a sessionAddr) Network() string { return "reattach" }
func (a sessionAddr) String() string {
	return hex.EncodeToString(a.id[:4]) + "@" + a.at.String()
}

// takeOver drops the current carrier, if any, for a carrier about to be
// attached, and returns how many bytes this side has received: what the
// other side resends from. Until attach, the grace period runs.
func (c *Conn) takeOver() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.peerEnd {
		return 0, errOver
	}
	if c.carrier != nil {
		c.carrier.nc.Close()
		c.carrier = nil
		c.lostAt = time.Now()
		c.expiry = time.AfterFunc(c.cfg.Grace, c.expire)
		c.notify()
	}
	return c.rrecv, nil
}
