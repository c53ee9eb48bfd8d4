package abi

import "sync/atomic"

// FIFOProducer writes bytes into one socket FIFO (the daemon for rx, the
// shim for tx). One goroutine at a time.
type FIFOProducer struct {
	buf      []byte
	mask     uint32
	tail     uint32  // private copy of our index
	own      *uint32 // shared: where tail is published
	peer     *uint32 // shared: the consumer's head
	lastHead uint32
}

// NewFIFOProducer makes a producer over buf (len a power of two) whose
// index lives at own and whose consumer's index lives at peer. Both indices
// must be equal (normally 0) when it is made.
func NewFIFOProducer(buf []byte, own, peer *uint32) *FIFOProducer {
	t := atomic.LoadUint32(own)
	return &FIFOProducer{buf: buf, mask: uint32(len(buf) - 1), tail: t, own: own, peer: peer, lastHead: atomic.LoadUint32(peer)}
}

// Free returns the bytes that fit now.
func (f *FIFOProducer) Free() (uint32, error) {
	head := atomic.LoadUint32(f.peer)
	if head-f.lastHead > f.tail-f.lastHead {
		return 0, ErrCorrupt // head moved backwards or past tail
	}
	f.lastHead = head
	used := f.tail - head
	if used > uint32(len(f.buf)) {
		return 0, ErrCorrupt
	}
	return uint32(len(f.buf)) - used, nil
}

// Used returns the bytes written and not yet consumed.
func (f *FIFOProducer) Used() (uint32, error) {
	free, err := f.Free()
	return uint32(len(f.buf)) - free, err
}

// Write copies as much of p as fits and publishes it.
func (f *FIFOProducer) Write(p []byte) (int, error) {
	free, err := f.Free()
	if err != nil {
		return 0, err
	}
	n := min(uint32(len(p)), free)
	if n == 0 {
		return 0, nil
	}
	off := f.tail & f.mask
	c := copy(f.buf[off:], p[:n])
	copy(f.buf, p[c:n])
	f.tail += n
	atomic.StoreUint32(f.own, f.tail)
	return int(n), nil
}

// Unread copies the bytes the consumer has not taken yet into p (up to
// len(p)) without consuming them. The caller must know the consumer has
// stopped (the daemon uses it when a socket's last reader closes).
func (f *FIFOProducer) Unread(p []byte) (int, error) {
	used, err := f.Used()
	if err != nil {
		return 0, err
	}
	n := min(uint32(len(p)), used)
	head := f.tail - used
	off := head & f.mask
	c := copy(p[:n], f.buf[off:])
	copy(p[c:n], f.buf)
	return int(n), nil
}

// FIFOConsumer reads bytes from one socket FIFO (the daemon for tx, the
// shim for rx). One goroutine at a time.
type FIFOConsumer struct {
	buf  []byte
	mask uint32
	head uint32
	own  *uint32
	peer *uint32
}

// NewFIFOConsumer makes a consumer over buf whose index lives at own and
// whose producer's index lives at peer.
func NewFIFOConsumer(buf []byte, own, peer *uint32) *FIFOConsumer {
	return &FIFOConsumer{buf: buf, mask: uint32(len(buf) - 1), head: atomic.LoadUint32(own), own: own, peer: peer}
}

// Used returns the bytes waiting.
func (f *FIFOConsumer) Used() (uint32, error) {
	avail := atomic.LoadUint32(f.peer) - f.head
	if avail > uint32(len(f.buf)) {
		return 0, ErrCorrupt
	}
	return avail, nil
}

// Read copies up to len(p) waiting bytes into p and releases their space.
func (f *FIFOConsumer) Read(p []byte) (int, error) {
	avail, err := f.Used()
	if err != nil {
		return 0, err
	}
	n := min(uint32(len(p)), avail)
	if n == 0 {
		return 0, nil
	}
	off := f.head & f.mask
	c := copy(p[:n], f.buf[off:])
	copy(p[c:n], f.buf)
	f.head += n
	atomic.StoreUint32(f.own, f.head)
	return int(n), nil
}

// EvState is fss_ev_state: the state carried in an events word.
func EvState(events uint32) uint32 { return (events & EvStateMask) >> EvStateShift }

// EvWord is the events word the daemon stores: the flags and the state.
func EvWord(state, events uint32) uint32 { return events&^EvStateMask | state<<EvStateShift }

// StateEvents reads slot s's state and event flags from one load of its
// events word, so the two belong together (see FSS_EV_STATE_MASK).
func StateEvents(s *Sock) (state, events uint32) {
	ev := atomic.LoadUint32(&s.Events)
	return EvState(ev), ev &^ EvStateMask
}

// TxWritable is the shim's rule for OUT: a third of the tx FIFO free
// (sk_stream_is_writeable).
func TxWritable(free, size uint32) bool { return uint64(free)*3 >= uint64(size) }

// Poll is fss_sock_poll: the exact readiness of slot s as the shim sees it
// (Linux's tcp_poll on the slot; see the header for the rules).
func Poll(s *Sock, txFIFOSize uint32) uint32 {
	st, ev := StateEvents(s)
	var r uint32
	if st == StListening || ev&EvListening != 0 {
		if atomic.LoadUint32(&s.Accept_pending) > 0 || atomic.LoadUint32(&s.Rx_tail) != atomic.LoadUint32(&s.Rx_head) {
			r |= PollIn // the shared queue, or this client's accept ring
		}
	} else {
		if ev&EvHup != 0 || ev&(EvRdEOF|EvWrEOF) == EvRdEOF|EvWrEOF || st == StOpen || st == StClosed {
			r |= PollHup
		}
		if ev&EvRdEOF != 0 {
			r |= PollIn | PollRdHup
		}
		if st != StConnecting {
			rxAvail := atomic.LoadUint32(&s.Rx_tail) - atomic.LoadUint32(&s.Rx_head)
			txFree := txFIFOSize - (atomic.LoadUint32(&s.Tx_tail) - atomic.LoadUint32(&s.Tx_head))
			if rxAvail > 0 {
				r |= PollIn
			}
			if ev&(EvWrEOF|EvHup) != 0 || TxWritable(txFree, txFIFOSize) {
				r |= PollOut
			}
		}
	}
	if ev&EvErr != 0 {
		r |= PollErr
	}
	return r
}

// Size returns the FIFO's capacity in bytes.
func (f *FIFOProducer) Size() int { return len(f.buf) }

// Size returns the FIFO's capacity in bytes.
func (f *FIFOConsumer) Size() int { return len(f.buf) }
