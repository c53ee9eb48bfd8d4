package stack

import (
	"sync/atomic"
)

// HandoffRing carries segments from one shard to another: a bounded
// single-producer single-consumer queue. Only the producing shard's
// receive goroutine calls Push; only the owning shard's goroutine calls Pop.
// Neither side ever takes a lock, so a shard never waits on another.
//
//	producer (shard q)                     consumer (shard r)
//	  slots[tail & mask] = v                 v = slots[head & mask]
//	  tail.Store(tail+1)  --release-->       head.Store(head+1)
type HandoffRing[T any] struct {
	// head is written only by the consumer; the producer reads it to see
	// free space.
	head atomic.Uint64
	_    [56]byte // keep head and tail on separate cache lines
	// tail is written only by the producer; the consumer reads it to see
	// new entries.
	tail  atomic.Uint64
	_     [56]byte
	mask  uint64
	slots []T
}

// NewHandoffRing returns a ring holding size entries; size is rounded up
// to a power of two (at least 2).
func NewHandoffRing[T any](size int) *HandoffRing[T] {
	n := 2
	for n < size {
		n <<= 1
	}
	return &HandoffRing[T]{mask: uint64(n - 1), slots: make([]T, n)}
}

// Cap returns the number of entries the ring holds.
func (r *HandoffRing[T]) Cap() int { return len(r.slots) }

// Push appends v. It reports false, and keeps nothing, when the ring is
// full. Producer only.
func (r *HandoffRing[T]) Push(v T) bool {
	tail := r.tail.Load()
	if tail-r.head.Load() >= uint64(len(r.slots)) {
		return false
	}
	r.slots[tail&r.mask] = v
	r.tail.Store(tail + 1)
	return true
}

// PopBatch moves up to len(out) entries into out and returns how many.
// Consumer only.
func (r *HandoffRing[T]) PopBatch(out []T) int {
	head := r.head.Load()
	avail := r.tail.Load() - head
	n := uint64(len(out))
	if avail < n {
		n = avail
	}
	var zero T
	for i := uint64(0); i < n; i++ {
		idx := (head + i) & r.mask
		out[i] = r.slots[idx]
		r.slots[idx] = zero // drop the reference for the garbage collector
	}
	if n > 0 {
		r.head.Store(head + n)
	}
	return int(n)
}

// Len returns the number of entries queued; exact only when called by
// either side with the other idle.
func (r *HandoffRing[T]) Len() int { return int(r.tail.Load() - r.head.Load()) }
