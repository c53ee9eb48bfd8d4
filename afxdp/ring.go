package afxdp

// Ring index arithmetic shared by the four AF_XDP rings.
//
//	         producer side                    consumer side
//	fill:    user  (Release)         ->       kernel (rx path)
//	rx:      kernel                  ->       user   (Receive)
//	tx:      user  (Submit)          ->       kernel (sendto / NAPI)
//	comp:    kernel                  ->       user   (TxFrame reaps)
//
// Producer and consumer are free-running uint32 indices in shared memory;
// the slot of index i is i & mask. Entries in [consumer, producer) are
// owned by the consumer, the others by the producer. Each side writes only
// its own index and reads the other's: a load-acquire of the other index
// before touching slots, a store-release of its own after. sync/atomic's
// loads and stores are sequentially consistent, which includes both.
// Each side also keeps a cached copy of the other side's index so that the
// common case touches no shared cache line.

import "sync/atomic"

// ringShared is the part of a ring that lives in shared memory.
type ringShared struct {
	// producer is written only by the producing side (user for fill/tx,
	// kernel for rx/comp) and read by the other.
	producer *uint32
	// consumer is written only by the consuming side and read by the
	// other.
	consumer *uint32
	// flags is written only by the kernel (XDP_RING_NEED_WAKEUP) and read
	// by user space. Nil for fakes without flags.
	flags *uint32
	// mask is size-1; size is a power of two. Immutable.
	mask uint32
	size uint32
}

// needWakeup reports whether the kernel asked to be woken up (sendto for
// tx, recvfrom/poll for fill) before it will look at this ring again.
func (r *ringShared) needWakeup() bool {
	return r.flags != nil && atomic.LoadUint32(r.flags)&xdpRingNeedWakeup != 0
}

// xdpRingNeedWakeup is XDP_RING_NEED_WAKEUP (uapi/linux/if_xdp.h).
const xdpRingNeedWakeup = 1

// prodRing is the user-space producer view of a ring (fill, tx). One
// goroutine at a time.
type prodRing struct {
	ringShared
	// cachedProd is our next producer index (== *producer after commit).
	cachedProd uint32
	// cachedCons is the last consumer index seen plus size: the first
	// index we may not write.
	cachedCons uint32
}

func (r *prodRing) init(s ringShared) {
	r.ringShared = s
	r.cachedProd = atomic.LoadUint32(s.producer)
	r.cachedCons = atomic.LoadUint32(s.consumer) + s.size
}

// free returns how many slots can be reserved, refreshing the cached
// consumer index only if fewer than want are known to be free.
func (r *prodRing) free(want uint32) uint32 {
	n := r.cachedCons - r.cachedProd
	if n >= want {
		return n
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) + r.size // acquire
	return r.cachedCons - r.cachedProd
}

// reserve claims up to n slots and returns the first index and how many
// were claimed. The slots must be written and then published with commit.
func (r *prodRing) reserve(n uint32) (idx, got uint32) {
	f := r.free(n)
	if n > f {
		n = f
	}
	idx = r.cachedProd
	r.cachedProd += n
	return idx, n
}

// cancel gives back the last n reserved, uncommitted slots.
func (r *prodRing) cancel(n uint32) { r.cachedProd -= n }

// commit publishes every reserved slot to the consumer.
func (r *prodRing) commit() { atomic.StoreUint32(r.producer, r.cachedProd) } // release

// pending returns how many published entries the consumer has not yet
// taken (a fresh read of its index).
func (r *prodRing) pending() uint32 {
	return atomic.LoadUint32(r.producer) - atomic.LoadUint32(r.consumer)
}

// consRing is the user-space consumer view of a ring (rx, comp). One
// goroutine at a time.
type consRing struct {
	ringShared
	// cachedCons is our next consumer index (>= *consumer; the gap is
	// peeked but not yet released).
	cachedCons uint32
	// cachedProd is the last producer index seen.
	cachedProd uint32
}

func (r *consRing) init(s ringShared) {
	r.ringShared = s
	r.cachedCons = atomic.LoadUint32(s.consumer)
	r.cachedProd = atomic.LoadUint32(s.producer)
}

// available returns how many entries can be peeked, refreshing the cached
// producer index only when the cached view is short of want.
func (r *consRing) available(want uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n >= want {
		return n
	}
	r.cachedProd = atomic.LoadUint32(r.producer) // acquire
	return r.cachedProd - r.cachedCons
}

// peek claims up to n entries and returns the first index and how many.
// The entries may be read until release.
func (r *consRing) peek(n uint32) (idx, got uint32) {
	a := r.available(n)
	if n > a {
		n = a
	}
	idx = r.cachedCons
	r.cachedCons += n
	return idx, n
}

// release hands every peeked entry back to the producer.
func (r *consRing) release() { atomic.StoreUint32(r.consumer, r.cachedCons) } // release
