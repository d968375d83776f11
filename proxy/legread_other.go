//go:build !unix

package proxy

import "net"

// rawReader: without a Unix read loop every connection uses conn.Read.
type rawReader struct{}

func (rawReader) init(net.Conn) {}

func (rawReader) ok() bool { return false }

func (rawReader) read(*legReader, []byte) (int, error) { panic("proxy: no raw reads on this platform") }
