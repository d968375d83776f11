package proxy

import (
	"sync"

	"golang.org/x/sys/unix"
)

// parkSupported: parked legs wait on an epoll instance of their own.
const parkSupported = true

// waker is the process's epoll instance for parked legs: one goroutine
// waits on it while any leg is registered, and starts a parked leg's pump
// again when its socket turns readable (or hangs up). Legs are registered
// level-triggered and one-shot: bytes already there when a leg parks wake it
// at once, and a leg is woken once per park.
type waker struct {
	initOnce sync.Once
	epfd     int // -1 when epoll is not available
	evfd     int // written to make the loop look at the table again

	mu      sync.Mutex
	legs    map[uint64]*leg // by the id given to epoll; a leg stays until it closes
	next    uint64          // the last id given (0 is the eventfd)
	running bool            // the loop goroutine is running
	broken  bool            // epoll_wait failed: no leg parks from then on
}

var parkWaker = waker{epfd: -1, evfd: -1}

func (w *waker) init() {
	w.initOnce.Do(func() {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			_ = unix.Close(epfd)
			return
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
			_ = unix.Close(evfd)
			_ = unix.Close(epfd)
			return
		}
		w.epfd, w.evfd = epfd, evfd
		w.legs = make(map[uint64]*leg)
	})
}

// park registers l's socket so that l.wake runs when it turns readable,
// and reports whether it did: on false the pump goes on reading itself.
// The caller's goroutine must touch nothing of the pump after a true
// return: the pump may already run again on another goroutine.
func (w *waker) park(l *leg) bool {
	w.init()
	if w.epfd < 0 || !l.rd.raw.ok() {
		return false
	}
	w.mu.Lock()
	if l.closed.Load() || w.broken {
		w.mu.Unlock()
		return false
	}
	if l.parkID == 0 {
		w.next++
		l.parkID = w.next
		w.legs[l.parkID] = l
	}
	if !w.running {
		w.running = true
		go w.loop()
	}
	id := l.parkID
	w.mu.Unlock()

	l.parkState.Store(legParked)
	var cerr error
	err := l.rd.raw.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(id), Pad: int32(id >> 32)}
		cerr = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		if cerr == unix.ENOENT {
			cerr = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err == nil && cerr == nil && !l.stopPark.Load() && !l.closed.Load() {
		return true
	}
	// Not registered (the socket closed under us), or told to stop parking
	// while registering (whoever told may have looked before the leg was
	// parked): read on, unless someone already woke the leg, in which case
	// its pump runs elsewhere.
	return !l.parkState.CompareAndSwap(legParked, legRunning)
}

// forget drops a closed leg; the loop ends once no leg is left.
func (w *waker) forget(l *leg) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l.parkID == 0 {
		return // never parked (parkID is given under mu, after init)
	}
	delete(w.legs, l.parkID)
	if len(w.legs) == 0 && w.running {
		var one = [8]byte{1}
		_, _ = unix.Write(w.evfd, one[:])
	}
}

// loop wakes parked legs until none is registered.
func (w *waker) loop() {
	var events [128]unix.EpollEvent
	for {
		n, err := unix.EpollWait(w.epfd, events[:], -1)
		if err != nil && err != unix.EINTR {
			// Not expected. No leg parks from now on; wake every parked one
			// (a leg between its check and being parked finds broken after
			// registering, through stopPark).
			w.mu.Lock()
			w.broken, w.running = true, false
			for _, l := range w.legs {
				l.stopPark.Store(true)
				l.unpark()
			}
			w.mu.Unlock()
			return
		}
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				var b [8]byte
				_, _ = unix.Read(w.evfd, b[:])
				continue
			}
			w.mu.Lock()
			l := w.legs[id]
			w.mu.Unlock()
			if l != nil {
				l.unpark()
			}
		}
		w.mu.Lock()
		if len(w.legs) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}
