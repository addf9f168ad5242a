package h2server

import "time"

// WithFixedRTT makes the round trip cfg's connections grow windows by d,
// whatever they measure.
func WithFixedRTT(cfg *Config, d time.Duration) *Config {
	cfg.fixedRTT = d
	return cfg
}

// StreamWindow is stream id's receive window now (what the client may
// have sent and the handler not read): 0 once the stream is forgotten.
func StreamWindow(c *Conn, id uint32) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[id]; s != nil {
		return s.target
	}
	return 0
}
