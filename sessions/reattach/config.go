package reattach

import "time"

// Defaults for Config's zero fields.
const (
	DefaultGrace            = 30 * time.Second
	DefaultWindow           = 1 << 20
	DefaultPingEvery        = 2 * time.Second
	DefaultDeadAfter        = 6 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
)

// Config holds a session's settings, the same on both sides; a nil
// *Config or a zero field means the default.
type Config struct {
	// Grace is how long a session outlives the loss of its carrier,
	// waiting to be re-attached. Default DefaultGrace.
	Grace time.Duration
	// Window bounds, per direction, the bytes written and not yet
	// acknowledged by the other side: what is kept to be sent again, and
	// what the other side may hold unread. Default DefaultWindow.
	Window int
	// PingEvery: a side that sent nothing for this long sends a ping.
	// Default DefaultPingEvery.
	PingEvery time.Duration
	// DeadAfter: a carrier on which nothing arrived for this long, or
	// whose write made no progress for this long, is taken as lost.
	// Default DefaultDeadAfter.
	DeadAfter time.Duration
	// HandshakeTimeout bounds the exchange of hello and welcome on a new
	// carrier. Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&out.Grace, DefaultGrace)
	def(&out.PingEvery, DefaultPingEvery)
	def(&out.DeadAfter, DefaultDeadAfter)
	def(&out.HandshakeTimeout, DefaultHandshakeTimeout)
	if out.Window < 4*maxPayload {
		if out.Window <= 0 {
			out.Window = DefaultWindow
		} else {
			out.Window = 4 * maxPayload
		}
	}
	return out
}
