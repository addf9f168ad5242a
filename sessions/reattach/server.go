package reattach

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/clusterconnect/clusterconnect/internal/httpx"
)

// Protocol is the Upgrade token of a request that opens a carrier.
const Protocol = "clusterconnect-reattach.v1"

// IsUpgrade reports whether r asks for a carrier.
func IsUpgrade(r *http.Request) bool {
	return httpx.IsUpgrade(r.Header) && strings.EqualFold(r.Header.Get("Upgrade"), Protocol)
}

// Defaults for ServerConfig's zero bounds.
const (
	DefaultMaxDetached          = 256
	DefaultMaxDetachedPerCaller = 16
)

// ServerConfig configures a Server.
type ServerConfig struct {
	Config
	// AgentID names this server in its welcomes, so that a client can ask
	// to re-attach here and not elsewhere.
	AgentID string
	// Identify names the caller of a request that opens a carrier, for
	// ServeHTTP: a session is re-attached only by the caller that opened
	// it. An error refuses the request (401). Required for ServeHTTP.
	Identify func(*http.Request) (string, error)
	// MaxDetached bounds the sessions kept waiting for a carrier, in all
	// and per caller; a session that would go past a bound ends when its
	// carrier is lost. Defaults DefaultMaxDetached and
	// DefaultMaxDetachedPerCaller.
	MaxDetached          int
	MaxDetachedPerCaller int
}

// A Server keeps the server side of sessions. It is a net.Listener whose
// Accept returns each new session (serve them with an http.Server, for
// instance); carriers reach it through ServeHTTP or Serve.
type Server struct {
	cfg      ServerConfig
	accept   chan *Conn
	done     chan struct{}
	closeOne sync.Once

	mu       sync.Mutex
	sessions map[SessionID]*entry
}

type entry struct {
	conn     *Conn
	identity string
}

// NewServer returns a Server; cfg may be nil when Serve is used alone.
func NewServer(cfg *ServerConfig) *Server {
	c := ServerConfig{}
	if cfg != nil {
		c = *cfg
	}
	c.Config = c.Config.withDefaults()
	if c.MaxDetached <= 0 {
		c.MaxDetached = DefaultMaxDetached
	}
	if c.MaxDetachedPerCaller <= 0 {
		c.MaxDetachedPerCaller = DefaultMaxDetachedPerCaller
	}
	if len(c.AgentID) > maxAgentID {
		c.AgentID = c.AgentID[:maxAgentID]
	}
	return &Server{cfg: c, accept: make(chan *Conn), done: make(chan struct{}), sessions: map[SessionID]*entry{}}
}

// ServeHTTP takes a request for Protocol, identifies its caller, answers
// 101 and serves the carrier.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !IsUpgrade(r) || r.ProtoMajor != 1 {
		httpx.WriteStatus(w, r, http.StatusBadRequest, "", "reattach: expected an HTTP/1.1 upgrade to "+Protocol)
		return
	}
	if s.cfg.Identify == nil {
		httpx.WriteStatus(w, r, http.StatusNotImplemented, "", "reattach: this server cannot tell callers apart")
		return
	}
	who, err := s.cfg.Identify(r)
	if err != nil {
		httpx.WriteStatus(w, r, http.StatusUnauthorized, "", "reattach: "+err.Error())
		return
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		httpx.WriteStatus(w, r, http.StatusInternalServerError, "", "reattach: cannot take over the connection")
		return
	}
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + Protocol + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		nc.Close()
		return
	}
	s.serve(&readerConn{Conn: nc, r: brw.Reader}, who, httpx.RequestID(r.Header))
}

// readerConn reads through r, which may hold bytes already read from Conn.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Serve takes nc as a carrier for caller who: it reads the hello, opens
// or re-attaches the session, and returns; the session then runs on nc.
// A hello for a session that is unknown, over, or another caller's gets a
// refusal that does not say which.
func (s *Server) Serve(nc net.Conn, who string) error { return s.serve(nc, who, "") }

// serve is Serve for a carrier that came with the request ID reqID.
func (s *Server) serve(nc net.Conn, who, reqID string) error {
	nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	br := bufio.NewReader(nc)
	typ, p, err := readFrame(br, nil)
	if err == nil && typ != frameHello {
		err = fmt.Errorf("%w: frame type %d for a hello", ErrProtocol, typ)
	}
	var h hello
	if err == nil {
		h, err = parseHello(p)
	}
	if err != nil {
		nc.Close()
		return err
	}
	if h.ID == (SessionID{}) {
		if h.Received != 0 {
			nc.Close()
			return fmt.Errorf("%w: a new session that has received %d bytes", ErrProtocol, h.Received)
		}
		return s.open(nc, br, who, reqID)
	}
	return s.resume(nc, br, who, h)
}

func (s *Server) open(nc net.Conn, br *bufio.Reader, who, reqID string) error {
	var id SessionID
	rand.Read(id[:])
	conn := newConn(s.cfg.Config, id, nc)
	conn.agentID, conn.reqID = s.cfg.AgentID, reqID
	e := &entry{conn: conn, identity: who}
	conn.reattach = func() { s.lost(e) }
	conn.done = func() { s.forget(id) }
	select {
	case <-s.done:
		return s.refuse(nc, "the server is closing")
	default:
	}
	if _, err := nc.Write(welcome{hello: hello{ID: id}, AgentID: s.cfg.AgentID}.append(nil)); err != nil {
		nc.Close()
		return err
	}
	nc.SetDeadline(time.Time{})
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		nc.Close()
		return net.ErrClosed
	default:
	}
	s.sessions[id] = e
	s.mu.Unlock()
	conn.attach(nc, br, 0)
	go conn.writeLoop()
	select {
	case s.accept <- conn:
		return nil
	case <-s.done:
		conn.Close()
		return net.ErrClosed
	}
}

func (s *Server) resume(nc net.Conn, br *bufio.Reader, who string, h hello) error {
	s.mu.Lock()
	e := s.sessions[h.ID]
	s.mu.Unlock()
	if e == nil || e.identity != who {
		return s.refuse(nc, "no such session here")
	}
	received, err := e.conn.takeOver()
	if err != nil {
		return s.refuse(nc, "no such session here")
	}
	if _, err := nc.Write(welcome{hello: hello{ID: h.ID, Received: received}, AgentID: s.cfg.AgentID}.append(nil)); err != nil {
		nc.Close()
		return err
	}
	nc.SetDeadline(time.Time{})
	return e.conn.attach(nc, br, h.Received)
}

func (s *Server) refuse(nc net.Conn, why string) error {
	nc.Write(appendFrame(nil, frameRefused, []byte(why)))
	nc.Close()
	return fmt.Errorf("%w: %s", ErrRefused, why)
}

// lost applies the bounds on detached sessions to e, whose carrier was
// just lost. Counting and ending are one step under s.mu: sessions that
// lose their carriers together (one network path gone) are counted one
// after the other, and only those past the bound end.
func (s *Server) lost(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all, mine := 0, 0
	for _, x := range s.sessions {
		if x.conn.detached() {
			all++
			if x.identity == e.identity {
				mine++
			}
		}
	}
	if all > s.cfg.MaxDetached || mine > s.cfg.MaxDetachedPerCaller {
		e.conn.mu.Lock()
		if e.conn.carrier == nil {
			e.conn.finishLocked(ErrLost)
		}
		e.conn.mu.Unlock()
	}
}

func (s *Server) forget(id SessionID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, id)
}

// Sessions is how many sessions the server keeps now, attached or not.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Accept returns the next new session.
func (s *Server) Accept() (net.Conn, error) {
	select {
	case c := <-s.accept:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and ends every session at once: their reads and
// writes fail with net.ErrClosed, and their clients are refused when
// they try to re-attach. An agent calls it when it stops, after its
// drain.
func (s *Server) Close() error {
	s.closeOne.Do(func() { close(s.done) })
	s.mu.Lock()
	var conns []*Conn
	for _, e := range s.sessions {
		conns = append(conns, e.conn)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		c.finishLocked(net.ErrClosed)
		c.mu.Unlock()
	}
	return nil
}

// Addr names the listener.
func (s *Server) Addr() net.Addr { return serverAddr(s.cfg.AgentID) }

type serverAddr string

func (a serverAddr) Network() string { return "reattach" }
func (a serverAddr) String() string  { return string(a) }

var _ net.Listener = (*Server)(nil)

// errOver is returned by takeOver for a session that is over.
var errOver = errors.New("reattach: session over")
