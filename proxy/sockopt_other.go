//go:build !linux

package proxy

import (
	"net"
	"syscall"
)

// Elsewhere the kernel's default send queue applies and write progress is
// measured by the write call alone.

func tcpSocket(net.Conn) syscall.RawConn { return nil }

func limitUnsent(syscall.RawConn) {}

func ackedBytes(syscall.RawConn) (uint64, bool) { return 0, false }

func unreadBytes(syscall.RawConn) (int, bool) { return 0, false }
