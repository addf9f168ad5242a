//go:build !linux

package tunnel

import "net"

// setUserTimeout does nothing where TCP_USER_TIMEOUT is not known.
func setUserTimeout(*net.TCPConn, int) {}
