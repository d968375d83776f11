package proxy

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unsentLowat bounds the bytes a leg's socket keeps queued but not yet sent
// (TCP_NOTSENT_LOWAT): a ping or close tether writes waits behind at most
// this much audio, and a peer that stopped reading makes writes block soon
// instead of after megabytes of kernel buffer.
const unsentLowat = 128 << 10

// tcpSocket returns the TCP socket under conn (through TLS) for raw
// access, or nil when there is none (a pipe).
func tcpSocket(conn net.Conn) syscall.RawConn {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	return rawConn(conn)
}

// limitUnsent sets TCP_NOTSENT_LOWAT on the socket, if there is one (best
// effort).
func limitUnsent(rc syscall.RawConn) {
	if rc == nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, unsentLowat)
	})
}

// ackedBytes returns how many bytes the peer has acknowledged on the socket
// (TCP_INFO tcpi_bytes_acked): while a write is blocked, the peer is
// reading as long as this grows.
func ackedBytes(rc syscall.RawConn) (uint64, bool) {
	if rc == nil {
		return 0, false
	}
	var acked uint64
	ok := false
	_ = rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			acked, ok = info.Bytes_acked, true
		}
	})
	return acked, ok
}

// unreadBytes returns how many bytes wait unread in the socket's receive
// queue (SIOCINQ): a peer whose bytes tether has not read yet, because the
// other leg holds the relay back, has sent something and is alive.
func unreadBytes(rc syscall.RawConn) (int, bool) {
	if rc == nil {
		return 0, false
	}
	n, ok := 0, false
	_ = rc.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		n, ok = v, err == nil
	})
	return n, ok
}
