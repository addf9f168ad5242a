package memnet

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Net is one network: listeners by address, and what has been dialed
// on it, by who dialed it.
type Net struct {
	mu    sync.Mutex
	ln    map[string]*Listener
	pipes map[string][]*pipe // by who dialed
	down  bool               // dials are refused
}

// New returns an empty network.
func New() *Net {
	return &Net{ln: map[string]*Listener{}, pipes: map[string][]*pipe{}}
}

// Listen returns a listener at addr.
func (n *Net) Listen(addr string) *Listener {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := &Listener{net: n, addr: Addr(addr), conns: make(chan net.Conn), done: make(chan struct{})}
	n.ln[addr] = l
	return l
}

// Dial connects to the listener at addr, as nobody in particular.
func (n *Net) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.DialAs("")(ctx, network, addr)
}

// DialAs returns a dialer whose connections Freeze and Cut name by who.
func (n *Net) DialAs(who string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return n.connect(ctx, who, addr) }
}

func (n *Net) connect(ctx context.Context, who, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.ln[addr]
	a, b := newPipe(), newPipe()
	n.pipes[who] = append(n.pipes[who], a, b)
	down := n.down
	n.mu.Unlock()
	if l == nil || down {
		return nil, &net.OpError{Op: "dial", Net: "mem", Err: os.ErrNotExist}
	}
	client := &Conn{r: a, w: b, local: "client", remote: l.addr}
	server := &Conn{r: b, w: a, local: l.addr, remote: "client"}
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Freeze stops the bytes of every connection who has open now until
// thaw, as a path whose packets are dropped; connections opened later
// work.
func (n *Net) Freeze(who string) (thaw func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return freeze(n.pipes[who])
}

// FreezeConn is Freeze for one connection only: the i-th who dialed,
// from 0.
func (n *Net) FreezeConn(who string, i int) (thaw func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	pipes := n.pipes[who]
	if 2*i+2 > len(pipes) {
		return func() {}
	}
	return freeze(pipes[2*i : 2*i+2])
}

func freeze(pipes []*pipe) (thaw func()) {
	for _, p := range pipes {
		p.setFrozen(true)
	}
	return func() {
		for _, p := range pipes {
			p.setFrozen(false)
		}
	}
}

// Cut ends every connection who has open now, as a relay that goes away
// does, and refuses new ones until back is called.
func (n *Net) Cut(who string) (back func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down = true
	for _, p := range n.pipes[who] {
		p.close()
	}
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.down = false
	}
}

// Addr is an address on a Net.
type Addr string

// Network is "mem".
func (a Addr) Network() string { return "mem" }

// String is the address as given.
func (a Addr) String() string { return string(a) }

// Listener is a net.Listener on a Net.
type Listener struct {
	net   *Net
	addr  Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// Accept waits for the next connection dialed to the listener.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the listener: Accept and dials to it fail.
func (l *Listener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

// Addr is the listener's address.
func (l *Listener) Addr() net.Addr { return l.addr }

// pipe is one direction of a connection.
type pipe struct {
	mu     sync.Mutex
	buf    []byte
	eof    bool // the writer closed
	frozen bool // written bytes wait in held
	held   []byte
	wake   chan struct{} // a token when there is something new
}

func newPipe() *pipe { return &pipe{wake: make(chan struct{}, 1)} }

func (p *pipe) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pipe) write(b []byte) {
	p.mu.Lock()
	if p.frozen {
		p.held = append(p.held, b...)
	} else {
		p.buf = append(p.buf, b...)
	}
	p.mu.Unlock()
	p.signal()
}

func (p *pipe) setFrozen(f bool) {
	p.mu.Lock()
	p.frozen = f
	if !f {
		p.buf, p.held = append(p.buf, p.held...), nil
	}
	p.mu.Unlock()
	p.signal()
}

func (p *pipe) close() {
	p.mu.Lock()
	p.eof = true
	p.mu.Unlock()
	p.signal()
}

// Conn is one end of a connection: it reads r and writes w.
type Conn struct {
	r, w          *pipe
	local, remote Addr

	mu       sync.Mutex
	closed   bool
	done     chan struct{}
	deadline chan struct{} // closed when the read deadline passes
	changed  chan struct{} // closed when the read deadline is set anew
	timer    *time.Timer
}

func (c *Conn) init() {
	if c.done == nil {
		c.done, c.changed = make(chan struct{}), make(chan struct{})
	}
}

// Read waits for bytes, the other side's close (io.EOF), its own close,
// or the read deadline.
func (c *Conn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		c.init()
		done, deadline, changed, closed := c.done, c.deadline, c.changed, c.closed
		c.mu.Unlock()
		if closed {
			return 0, net.ErrClosed
		}
		select {
		case <-deadline:
			return 0, os.ErrDeadlineExceeded
		default:
		}
		c.r.mu.Lock()
		if len(c.r.buf) > 0 {
			n := copy(b, c.r.buf)
			c.r.buf = c.r.buf[n:]
			more := len(c.r.buf) > 0
			c.r.mu.Unlock()
			if more {
				c.r.signal()
			}
			return n, nil
		}
		eof := c.r.eof && !c.r.frozen
		c.r.mu.Unlock()
		if eof {
			return 0, io.EOF
		}
		select {
		case <-c.r.wake:
		case <-done:
		case <-changed: // a reader waiting on the old deadline looks again
		case <-deadline:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// Write never blocks: the bytes join the other side's buffer, or wait
// there while the connection is frozen.
func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	c.w.write(b)
	return len(b), nil
}

// Close ends both directions.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.init()
	if !c.closed {
		c.closed = true
		close(c.done)
		if c.timer != nil {
			c.timer.Stop()
		}
	}
	c.mu.Unlock()
	c.w.close()
	c.r.close()
	return nil
}

// CloseWrite ends the direction towards the other side.
func (c *Conn) CloseWrite() error { c.w.close(); return nil }

// LocalAddr is this side's address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the other side's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read deadline: writes never wait.
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetWriteDeadline is accepted and has no effect: writes never block.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// SetReadDeadline bounds reads, waiting ones too.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	close(c.changed)
	c.changed = make(chan struct{})
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.deadline = nil
	if t.IsZero() {
		return nil
	}
	ch := make(chan struct{})
	c.deadline = ch
	if d := time.Until(t); d <= 0 {
		close(ch)
	} else {
		c.timer = time.AfterFunc(d, func() { close(ch) })
	}
	return nil
}
