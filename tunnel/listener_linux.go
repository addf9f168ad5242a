package tunnel

import (
	"net"

	"golang.org/x/sys/unix"
)

// setUserTimeout ends c when data stays unacknowledged for ms
// milliseconds, counting a zero receive window as unacknowledged.
func setUserTimeout(c *net.TCPConn, ms int) {
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms) })
	}
}
