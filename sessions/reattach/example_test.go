package reattach_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"

	"github.com/clusterconnect/clusterconnect/sessions/reattach"
)

// A session between a client and a server over TCP, as the client proxy
// and the agent hold one through the relay: what the client writes, the
// server echoes. Had the carrier been lost, Dial's function would have
// been called again and the session gone on.
func Example() {
	srv := reattach.NewServer(&reattach.ServerConfig{AgentID: "agent-1"})
	defer srv.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			carrier, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.Serve(carrier, "alice") // who the carrier's caller is
		}
	}()
	go func() {
		session, err := srv.Accept()
		if err != nil {
			return
		}
		defer session.Close()
		io.Copy(session, session)
	}()

	dial := func(ctx context.Context, agentID string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
	}
	conn, err := reattach.Dial(context.Background(), dial, nil)
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	fmt.Fprintln(conn, "hello through a session")
	line, _ := bufio.NewReader(conn).ReadString('\n')
	fmt.Print(line)
	fmt.Println("lives in", conn.AgentID())
	// Output:
	// hello through a session
	// lives in agent-1
}
