//go:build !linux

package proxy

// parkSupported: without epoll, a leg's pump waits for it on its goroutine.
const parkSupported = false

type waker struct{}

var parkWaker waker

func (waker) park(*leg) bool { return false }

func (waker) forget(*leg) {}
