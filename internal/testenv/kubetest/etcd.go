package kubetest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Etcd is an etcd cluster of one or more members on loopback, for tests
// of what keeps state in etcd: a single member, or three to lose one.
type Etcd struct {
	dir     string
	bin     string
	members []*etcdMember
}

type etcdMember struct {
	name, clientURL, peerURL string
	proc                     *process
}

// StartEtcd starts an etcd cluster of n members with data under dir and
// waits until every member answers its health check.
func StartEtcd(ctx context.Context, dir string, n int) (*Etcd, error) {
	bin, err := EtcdPath()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	// The ports were free when picked, and another test's process may
	// take one before etcd binds it: then start again on new ones.
	for attempt := 1; ; attempt++ {
		e, err := startEtcd(ctx, dir, bin, n)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return e, err
		}
		for i := range n {
			os.RemoveAll(filepath.Join(dir, "m"+strconv.Itoa(i)))
		}
	}
}

func startEtcd(ctx context.Context, dir, bin string, n int) (*Etcd, error) {
	e := &Etcd{dir: dir, bin: bin}
	var initial []string
	for i := range n {
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		m := &etcdMember{name: "m" + strconv.Itoa(i), clientURL: loopbackURL("http", cp), peerURL: loopbackURL("http", pp)}
		e.members = append(e.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	for i := range e.members {
		if err := e.start(i, strings.Join(initial, ",")); err != nil {
			e.Stop()
			return nil, err
		}
	}
	for i := range e.members {
		if err := e.waitHealthy(ctx, i); err != nil {
			e.Stop()
			return nil, err
		}
	}
	return e, nil
}

func (e *Etcd) start(i int, initial string) error {
	m := e.members[i]
	var err error
	m.proc, err = startProcess("etcd "+m.name, filepath.Join(e.dir, m.name+".log"), e.bin,
		"--name="+m.name,
		"--data-dir="+filepath.Join(e.dir, m.name),
		"--listen-client-urls="+m.clientURL,
		"--advertise-client-urls="+m.clientURL,
		"--listen-peer-urls="+m.peerURL,
		"--initial-advertise-peer-urls="+m.peerURL,
		"--initial-cluster="+initial,
		"--initial-cluster-state=new",
	)
	return err
}

func (e *Etcd) waitHealthy(ctx context.Context, i int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	m := e.members[i]
	return m.proc.waitFor(ctx, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, m.clientURL+"/health", "")
	})
}

// Endpoints are the members' client URLs.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, m := range e.members {
		out = append(out, m.clientURL)
	}
	return out
}

// Kill SIGKILLs member i.
func (e *Etcd) Kill(i int) {
	m := e.members[i]
	if m.proc == nil {
		return
	}
	_ = m.proc.cmd.Process.Signal(syscall.SIGKILL)
	<-m.proc.exited
}

// Restart starts member i again on its data and waits until it is healthy.
func (e *Etcd) Restart(ctx context.Context, i int) error {
	var initial []string
	for _, m := range e.members {
		initial = append(initial, m.name+"="+m.peerURL)
	}
	if err := e.start(i, strings.Join(initial, ",")); err != nil {
		return err
	}
	if err := e.waitHealthy(ctx, i); err != nil {
		return fmt.Errorf("kubetest: restarting etcd %s: %w", e.members[i].name, err)
	}
	return nil
}

// Stop stops every member.
func (e *Etcd) Stop() {
	for _, m := range e.members {
		m.proc.stop()
	}
}
