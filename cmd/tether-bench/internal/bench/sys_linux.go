package bench

import "syscall"

// childAttr makes a child process die with the bench, even on SIGKILL.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
