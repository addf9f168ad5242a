package kubetest

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the child get SIGKILL when the test binary dies, so a
// panicking or timed-out test leaves no etcd or kube-apiserver behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
