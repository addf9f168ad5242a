package kubetest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// ExecInContainer runs one of a fixed set of commands in memory; the stand-in
// node has no container runtime and starts no processes:
//
//	echo ARGS…     prints ARGS to stdout
//	stderr ARGS…   prints ARGS to stderr
//	cat            copies stdin to stdout until stdin closes
//	sha256sum      prints the SHA-256 of stdin, as sha256sum does
//	hostname       prints the pod name
//	exit N         exits with status N
//
// Anything else exits with status 127, as a shell does.
func (n *Node) ExecInContainer(ctx context.Context, pod, uid, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, timeout time.Duration) error {
	if len(cmd) == 0 {
		return fmt.Errorf("no command given")
	}
	switch name, args := cmd[0], cmd[1:]; name {
	case "echo":
		_, err := fmt.Fprintln(out, strings.Join(args, " "))
		return err
	case "stderr":
		_, err := fmt.Fprintln(errOut, strings.Join(args, " "))
		return err
	case "cat":
		if in == nil {
			return nil
		}
		_, err := io.Copy(out, in)
		return err
	case "sha256sum":
		h := sha256.New()
		if in != nil {
			if _, err := io.Copy(h, in); err != nil {
				return err
			}
		}
		_, err := fmt.Fprintf(out, "%x  -\n", h.Sum(nil))
		return err
	case "hostname":
		_, err := fmt.Fprintln(out, pod)
		return err
	case "exit":
		code := 0
		if len(args) > 0 {
			var err error
			if code, err = strconv.Atoi(args[0]); err != nil {
				fmt.Fprintf(errOut, "exit: %s: numeric argument required\n", args[0])
				return utilexec.CodeExitError{Err: err, Code: 2}
			}
		}
		if code == 0 {
			return nil
		}
		return utilexec.CodeExitError{Err: fmt.Errorf("exit status %d", code), Code: code}
	default:
		fmt.Fprintf(errOut, "%s: command not found (the stand-in node runs echo, stderr, cat, sha256sum, hostname, exit)\n", name)
		return utilexec.CodeExitError{Err: fmt.Errorf("%s: command not found", name), Code: 127}
	}
}

// AttachContainer attaches to the container's main process, which echoes
// its stdin to stdout. Without stdin it waits until the client goes away.
func (n *Node) AttachContainer(ctx context.Context, pod, uid, container string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	if in == nil {
		<-ctx.Done()
		return nil
	}
	_, err := io.Copy(out, in)
	return err
}

// PortForward connects a forwarded stream to 127.0.0.1:port.
func (n *Node) PortForward(ctx context.Context, pod, uid string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port-forward to %s: %w", pod, err)
	}
	defer conn.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(conn, stream)
		// The client finished sending: pass the half-close on.
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	io.Copy(stream, conn)
	stream.Close()
	wg.Wait()
	return nil
}
