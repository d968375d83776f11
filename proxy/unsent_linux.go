package proxy

import (
	"crypto/tls"
	"net"
	"syscall"
)

// unsentLowat bounds the bytes a leg's socket keeps queued but not yet sent
// (TCP_NOTSENT_LOWAT): a ping or close tether writes waits behind at most
// this much audio, and a peer that stopped reading makes writes block soon
// instead of after megabytes of kernel buffer.
const unsentLowat = 128 << 10

// tcpNotSentLowat is TCP_NOTSENT_LOWAT from linux/tcp.h.
const tcpNotSentLowat = 25

// limitUnsent sets TCP_NOTSENT_LOWAT on conn's socket (through TLS), if it
// has one. Best effort: a connection without a socket (a pipe) is left as is.
func limitUnsent(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	rc := rawConn(conn)
	if rc == nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotSentLowat, unsentLowat)
	})
}
