package bench

import (
	"container/heap"
	"time"
)

// shard sends the probes of a group of sessions of one target, in schedule
// order, from one goroutine: a session's send waits for nothing but its
// scheduled time (open loop), and a wake-up sends every probe then due, so
// the load generator spends its CPU on the sockets rather than on timers.
// A send held up (a write blocked on a full socket) delays the shard's next
// sends, which are then counted late.
type shard struct {
	r   *runner
	tgt *target
	due dueHeap
}

// dueEntry is a session and the offset of its next send.
type dueEntry struct {
	s  *session
	at time.Duration
}

type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// shards splits the set-up sessions of t into n groups, by phase so that
// each group's sends spread over the interval.
func (r *runner) shards(t *target, n int) []*shard {
	var up []*session
	for _, s := range t.sessions {
		if s.upOK && s.probe != nil {
			up = append(up, s)
		}
	}
	n = min(n, len(up))
	out := make([]*shard, n)
	for i := range out {
		out[i] = &shard{r: r, tgt: t}
	}
	for i, s := range up {
		sh := out[i%n]
		if at, ok := r.sched.Next(t.index, s.phase, 0); ok {
			sh.due = append(sh.due, dueEntry{s: s, at: at})
		}
	}
	for _, sh := range out {
		heap.Init(&sh.due)
	}
	return out
}

// run sends until the schedule ends or the runner quits.
func (sh *shard) run() {
	r := sh.r
	st := sh.tgt.stats
	select {
	case <-r.started:
	case <-r.quit:
		return
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for len(sh.due) > 0 {
		e := &sh.due[0]
		at := r.start.Add(e.at)
		if wait := time.Until(at); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-r.quit:
				return
			}
		}
		s := e.s
		now := time.Now()
		late := now.Sub(at)
		st.lateness.Record(late)
		if late > r.opts.LateAfter {
			st.late.Add(1)
		}
		s.probe.stamp(s.seq, now.Sub(r.base))
		if err := s.write(s.probe.frame); err != nil {
			if !s.closing.Load() && !s.readDone.Load() {
				st.fail(errorKind("write", err))
			}
			heap.Pop(&sh.due)
			continue
		}
		if s.live != nil {
			s.live.sent(s.seq, now.Sub(r.base))
		}
		s.seq++
		st.sent.Add(1)
		st.sentBytes.Add(uint64(len(s.probe.frame)))
		if next, ok := r.sched.Next(sh.tgt.index, s.phase, e.at+1); ok {
			e.at = next
			heap.Fix(&sh.due, 0)
		} else {
			heap.Pop(&sh.due)
		}
	}
}
