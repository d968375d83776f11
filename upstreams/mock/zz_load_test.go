package mock

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestZZLoad(t *testing.T) {
	s, url := startServer(t, Options{})
	const n = 500
	peers := make([]*rawPeer, n)
	for i := range peers {
		peers[i] = echoPeer(t, url)
	}
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(20 * time.Millisecond)
			defer tk.Stop()
			for range 250 {
				<-tk.C
				p.roundTrip(t)
			}
		}()
	}
	wg.Wait()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("500x50fps x5s: %v, mallocs %d, heap %d MB, goroutines %d, sessions %d", time.Since(start), ms.Mallocs-ms0.Mallocs, ms.HeapAlloc>>20, runtime.NumGoroutine(), s.ActiveSessions())
	_ = ws.OpText
}
