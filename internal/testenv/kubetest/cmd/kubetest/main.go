// Command kubetest prepares the real Kubernetes parts the tests run against.
//
//	go run ./internal/testenv/kubetest/cmd/kubetest install
//
// builds kube-apiserver, etcd and promtool (once each, cached in the user
// cache dir), and kubectl the same way when none is on PATH. It installs
// and starts nothing: the tests start what they need on loopback ports.
// hack/test.sh runs this before the tests.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] != "install" {
		fmt.Fprintln(os.Stderr, "usage: kubetest install")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := install(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func install(ctx context.Context) error {
	bin, err := kubetest.Build(ctx, os.Stderr, "kube-apiserver")
	if err != nil {
		return err
	}
	fmt.Printf("kube-apiserver %s: %s\n", kubetest.KubeVersion, bin)
	if _, err := kubetest.KubectlPath(); errors.Is(err, kubetest.ErrMissing) {
		if _, err := kubetest.Build(ctx, os.Stderr, "kubectl"); err != nil {
			return err
		}
	}
	kubectl, err := kubetest.KubectlPath()
	if err != nil {
		return err
	}
	fmt.Printf("kubectl: %s\n", kubectl)
	etcd, err := kubetest.EtcdPath()
	if errors.Is(err, kubetest.ErrMissing) && os.Getenv(kubetest.EnvEtcd) == "" {
		etcd, err = kubetest.BuildEtcd(ctx, os.Stderr)
	}
	if err != nil {
		return err
	}
	fmt.Printf("etcd: %s\n", etcd)
	promtool, err := kubetest.BuildPromtool(ctx, os.Stderr)
	if err != nil {
		return err
	}
	fmt.Printf("promtool %s: %s\n", kubetest.PromtoolVersion, promtool)
	return nil
}
