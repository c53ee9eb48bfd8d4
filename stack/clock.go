package stack

import (
	"container/heap"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// heapClock is the tcpip.Clock of a shard's netstack: its timers live in a
// heap of the shard's own, behind a single runtime timer armed for the
// earliest of them.
//
// netstack keeps several timers per connection (retransmission, TIME_WAIT,
// keepalive, loss probe) and moves them often, often earlier (a
// retransmission timer re-armed for a new segment). In the Go runtime's
// timer heap, every timer moved earlier makes the next check of that heap
// walk all of it (runtime.(*timers).adjust), and a short-connection server
// keeps tens of thousands of TIME_WAIT timers there: in the nginx lab's
// close phase the walk was 8% of the daemon's CPU. Here moving or stopping
// a timer is a sift in a heap of the shard's timers only, and the runtime
// sees one timer per shard, moved only when the earliest deadline moves
// earlier.
//
// AfterFunc's contract holds: f runs in a goroutine of its own (the last
// due one on the goroutine that found them due), Stop reports whether it
// stopped a pending call, and Reset re-arms a pending, stopped or expired
// timer.
type heapClock struct {
	tcpip.Clock // Now and NowMonotonic

	epoch time.Time // deadlines are nanoseconds since, on the monotonic clock

	mu      sync.Mutex
	timers  timerHeap
	rt      *time.Timer // fires fire; armed for armedAt
	armedAt int64       // deadline rt is armed for; 0 when not armed
}

func newHeapClock() *heapClock {
	c := &heapClock{Clock: tcpip.NewStdClock(), epoch: time.Now()}
	c.rt = time.AfterFunc(time.Hour, c.fire)
	c.rt.Stop()
	return c
}

func (c *heapClock) now() int64 { return int64(time.Since(c.epoch)) }

// AfterFunc calls f in its own goroutine once d has elapsed.
func (c *heapClock) AfterFunc(d time.Duration, f func()) tcpip.Timer {
	t := &heapTimer{c: c, f: f, index: -1}
	t.Reset(d)
	return t
}

// armLocked makes sure the runtime timer fires by the earliest deadline.
// A runtime timer armed earlier than needed is left alone: it finds
// nothing due, and arms itself for what is then the earliest.
func (c *heapClock) armLocked() {
	if len(c.timers) == 0 {
		return
	}
	first := c.timers[0].when
	if c.armedAt != 0 && c.armedAt <= first {
		return
	}
	c.armedAt = first
	c.rt.Reset(time.Duration(max(first-c.now(), 0)))
}

// fire runs on the runtime timer's goroutine: it takes every due timer off
// the heap, re-arms for the next, and starts the due calls.
func (c *heapClock) fire() {
	var due []func()
	c.mu.Lock()
	c.armedAt = 0
	now := c.now()
	for len(c.timers) > 0 && c.timers[0].when <= now {
		t := heap.Pop(&c.timers).(*heapTimer)
		due = append(due, t.f)
	}
	c.armLocked()
	c.mu.Unlock()
	for i, f := range due {
		if i == len(due)-1 {
			f() // this goroutine is the last call's own
			break
		}
		go f()
	}
}

// heapTimer is one timer of a heapClock.
type heapTimer struct {
	c     *heapClock
	f     func()
	when  int64 // deadline, c.now() units
	index int   // position in c.timers; -1 when not pending
}

// Stop prevents the call if it is pending and reports whether it was.
func (t *heapTimer) Stop() bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&c.timers, t.index)
	return true
}

// Reset makes the call happen d from now, whether it was pending, stopped
// or done.
func (t *heapTimer) Reset(d time.Duration) {
	c := t.c
	c.mu.Lock()
	t.when = c.now() + int64(max(d, 0))
	if t.index >= 0 {
		heap.Fix(&c.timers, t.index)
	} else {
		heap.Push(&c.timers, t)
	}
	c.armLocked()
	c.mu.Unlock()
}

// timerHeap orders pending timers by deadline (container/heap), keeping
// each timer's index current for Stop and Reset.
type timerHeap []*heapTimer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when < h[j].when }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *timerHeap) Push(x any) {
	t := x.(*heapTimer)
	t.index = len(*h)
	*h = append(*h, t)
}

func (h *timerHeap) Pop() any {
	old := *h
	n := len(old)
	t := old[n-1]
	old[n-1] = nil
	t.index = -1
	*h = old[:n-1]
	return t
}
