//go:build unix

package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawReader reads a socket through syscall.RawConn: the runtime poller
// calls rawRead when the socket may be readable, so a pump waiting for the
// next frame holds no buffer. The fields describe the read in progress and
// belong to the leg's pump.
type rawReader struct {
	rc syscall.RawConn
	// readFn is rawRead bound once, so a read does not allocate a closure.
	readFn func(fd uintptr) bool
	lr     *legReader
	dst    []byte // nil: read into a pooled buffer set as lr.buf
	n      int
	err    error
	// wouldBlock: the read found nothing and the pump may park.
	wouldBlock bool
}

func (rr *rawReader) init(c net.Conn) {
	if rr.rc = rawConn(c); rr.rc != nil {
		rr.readFn = rr.rawRead
	}
}

// rawConn returns c's socket for raw access, or nil when c has none (TLS,
// pipes).
func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

func (rr *rawReader) ok() bool { return rr.rc != nil }

// read reads once (waiting for readability) into dst, or into a pooled
// buffer set as lr.buf when dst is nil.
func (rr *rawReader) read(lr *legReader, dst []byte) (int, error) {
	var err error
	for rearmed := false; ; {
		if !rearmed {
			lr.park.arm(lr.conn, lr.base)
		}
		rr.lr, rr.dst, rr.n, rr.err = lr, dst, 0, nil
		err = rr.rc.Read(rr.readFn)
		rr.lr, rr.dst = nil, nil
		if err == nil {
			break
		}
		expired, retry := lr.park.expired(err, lr.base)
		if retry {
			rearmed = true // teardown's deadline is in place
			continue
		}
		if !expired {
			break
		}
		// The park deadline passed while this read waited.
		if lr.park.quiet(lr.base) && lr.park.boundary {
			lr.park.disarm(lr.conn)
			return 0, errWouldBlock
		}
		lr.park.rearm(lr.conn, lr.base)
		rearmed = true
	}
	switch {
	case err != nil: // closed, or a deadline passed
		return 0, err
	case rr.wouldBlock:
		rr.wouldBlock = false
		lr.park.disarm(lr.conn)
		return 0, errWouldBlock
	case rr.err != nil:
		return 0, os.NewSyscallError("read", rr.err)
	case rr.n == 0:
		return 0, io.EOF
	}
	return rr.n, nil
}

// rawRead is called by RawConn.Read; false means "wait until readable and
// call again". The pooled buffer is taken only for the read itself.
func (rr *rawReader) rawRead(fd uintptr) bool {
	lr := rr.lr
	dst := rr.dst
	pooled := dst == nil
	if pooled {
		lr.buf = readPool.Get().(*[readBufSize]byte)
		dst = lr.buf[:]
	}
	for {
		n, err := syscall.Read(int(fd), dst)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			if pooled {
				lr.release()
			}
			if lr.park.boundary && lr.park.quiet(lr.base) {
				rr.wouldBlock = true
				return true
			}
			return false
		}
		lr.park.boundary = false // a header read in parts never parks
		n = max(n, 0)
		if pooled && n == 0 {
			lr.release()
		}
		if n > 0 {
			lr.touch()
		}
		rr.n, rr.err = n, err
		return true
	}
}
