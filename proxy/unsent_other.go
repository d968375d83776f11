//go:build !linux

package proxy

import "net"

// limitUnsent: TCP_NOTSENT_LOWAT is Linux's; elsewhere the kernel's default
// send queue applies.
func limitUnsent(net.Conn) {}
