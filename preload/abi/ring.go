package abi

import "sync/atomic"

// Msg is a ring message type.
type Msg interface{ Req | Cmpl }

// Producer is the producing side of one SPSC ring. One goroutine at a time.
type Producer[T Msg] struct {
	r        *Ring
	ents     []T
	mask     uint32
	prod     uint32 // private copy: only published, never read back
	lastCons uint32 // last consumer index seen, to catch it moving backwards
}

// NewProducer starts producing at the ring's current indices.
func NewProducer[T Msg](r *Ring, ents []T) *Producer[T] {
	p := atomic.LoadUint32(&r.Prod)
	return &Producer[T]{r: r, ents: ents, mask: uint32(len(ents) - 1), prod: p, lastCons: atomic.LoadUint32(&r.Cons)}
}

// Free returns how many messages fit now.
func (p *Producer[T]) Free() (uint32, error) {
	cons := atomic.LoadUint32(&p.r.Cons)
	n := uint32(len(p.ents))
	if cons-p.lastCons > p.prod-p.lastCons {
		return 0, ErrCorrupt // consumer index moved backwards or past the producer
	}
	p.lastCons = cons
	used := p.prod - cons
	if used > n {
		return 0, ErrCorrupt
	}
	return n - used, nil
}

// Push copies m into the ring and publishes it. It returns false when the
// ring is full.
func (p *Producer[T]) Push(m *T) (bool, error) {
	free, err := p.Free()
	if err != nil || free == 0 {
		return false, err
	}
	p.ents[p.prod&p.mask] = *m
	p.prod++
	atomic.StoreUint32(&p.r.Prod, p.prod) // release; Go atomics are sequentially consistent
	return true, nil
}

// Consumer is the consuming side of one SPSC ring. One goroutine at a time.
type Consumer[T Msg] struct {
	r    *Ring
	ents []T
	mask uint32
	cons uint32 // private copy: only published, never read back
}

// NewConsumer starts consuming at the ring's current indices.
func NewConsumer[T Msg](r *Ring, ents []T) *Consumer[T] {
	return &Consumer[T]{r: r, ents: ents, mask: uint32(len(ents) - 1), cons: atomic.LoadUint32(&r.Cons)}
}

// Pending returns how many messages wait.
func (c *Consumer[T]) Pending() (uint32, error) {
	avail := atomic.LoadUint32(&c.r.Prod) - c.cons
	if avail > uint32(len(c.ents)) {
		return 0, ErrCorrupt
	}
	return avail, nil
}

// Pop copies the next message into m and releases its slot. It returns
// false when the ring is empty.
func (c *Consumer[T]) Pop(m *T) (bool, error) {
	avail, err := c.Pending()
	if err != nil || avail == 0 {
		return false, err
	}
	*m = c.ents[c.cons&c.mask] // copy out before releasing: the producer may reuse the entry
	c.cons++
	atomic.StoreUint32(&c.r.Cons, c.cons)
	return true, nil
}

// SetBit sets bit i of a shared bitmap (atomic OR; many writers allowed).
func SetBit(m []uint64, i uint32) { atomic.OrUint64(&m[i/64], 1<<(i%64)) }

// TakeWord returns word w of a shared bitmap and clears it.
func TakeWord(m []uint64, w int) uint64 { return atomic.SwapUint64(&m[w], 0) }
