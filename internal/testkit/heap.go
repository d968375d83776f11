package testkit

import "runtime"

// HeapHeld is the heap that *p holds: the live heap after a collection
// with it, less the live heap after one once *p is nil (it sets *p to nil).
func HeapHeld[T any](p **T) int64 {
	var with, without runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&with)
	runtime.KeepAlive(*p)
	*p = nil
	runtime.GC()
	runtime.ReadMemStats(&without)
	return int64(with.HeapAlloc) - int64(without.HeapAlloc)
}
