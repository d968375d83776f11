//go:build !linux

package bench

import "syscall"

// childAttr: without Pdeathsig, children are stopped by the bench's cleanup only.
func childAttr() *syscall.SysProcAttr { return nil }
