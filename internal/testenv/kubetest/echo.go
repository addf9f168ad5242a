package kubetest

import (
	"io"
	"net"
)

// Echo serves ln until it is closed, sending back on each connection what
// it reads: a pod's port for port-forwards, a server for a TLS check.
func Echo(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
}
