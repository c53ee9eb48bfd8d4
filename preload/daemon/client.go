package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsstack/fsstack/preload/abi"
)

// ErrProtocol is wrapped by the reason a client is dropped for breaking
// the protocol (out-of-range index, bytes on the control connection, ...).
var ErrProtocol = errors.New("shim protocol violation")

// client is one attached process.
//
// Threading: run's goroutine (the client loop) is the only one that
// consumes requests, produces completions and allocates or frees slots.
// Socket goroutines publish readiness into slots through attached
// references under their socket's mu.
type client struct {
	d          *Daemon
	id         uint32
	pid        int32
	uid        uint32     // effective uid at attach (SO_PEERCRED)
	proc       *procCreds // its current credentials, for bind (cred_linux.go)
	forkChild  bool
	wakeAck    bool // FSS_HELLO_WAKE_ACK: coalesce wake-ups
	handover   bool // FSS_HELLO_HANDOVER: may answer BIND/CONNECT with -FSS_HANDOVER_ERRNO
	txNospace  bool // FSS_HELLO_TX_NOSPACE: publish tx room only under FSS_SF_TX_NOSPACE (txRoomLocked)
	acceptRing bool // FSS_HELLO_ACCEPT_RING: its listeners' rings may be filled (acceptring.go)
	log        *slog.Logger
	conn       *net.UnixConn

	// Set up by makeSegment; released by unmap after teardown.
	mem                []byte
	seg                *abi.Segment
	hdr                *abi.SegHdr
	doorbell           *os.File
	doorbellFD, wakeFD int
	reqs               *abi.Consumer[abi.Req]
	cmpls              *abi.Producer[abi.Cmpl]
	readyMap, kickMap  []uint64

	// batching is set while the loop serves requests: a readiness change
	// published meanwhile (by the ops, or by a socket goroutine) leaves
	// its wake-up to the one the loop sends after the batch (deferred
	// says one was left). Without it an ACCEPT woke a shim waiting for its
	// completion twice: once for the new slot's readiness, once for the
	// completion.
	batching, deferred atomic.Bool
	lastWake           atomic.Int64 // unix ns of the last wake write (FSS_HELLO_WAKE_ACK)
	fillWanted         atomic.Bool  // connections arrived for this client's accept rings (wantFill)
	sweepWanted        atomic.Bool  // records may have waited too long in the accept rings (armSweep)
	sweepArmed         atomic.Bool  // a sweep's timer runs

	txBuf []byte // the loop's scratch for sends it makes itself (kickFromLoop)

	mu    sync.Mutex // guards slots and gens
	slots []*sockRef // by slot index; nil = free
	gens  []uint16   // last generation handed out per slot

	stopOnce sync.Once
	stopCh   chan struct{} // closed by stop
	reason   error         // why stop was called; written before stopCh closes
	done     chan struct{} // closed when run has released everything
}

// stop asks the client loop to end; reason nil is an orderly disconnect.
// Safe from any goroutine, any number of times (the first reason wins).
func (c *client) stop(reason error) {
	c.stopOnce.Do(func() {
		c.reason = reason
		close(c.stopCh)
		// Wake the loop if it sleeps on the doorbell.
		if c.doorbell != nil {
			var one = [8]byte{1}
			c.doorbell.Write(one[:])
		}
	})
}

// violation drops the client for breaking the protocol.
func (c *client) violation(format string, args ...any) {
	c.stop(fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...)))
}

func (c *client) stopped() bool {
	select {
	case <-c.stopCh:
		return true
	default:
		return false
	}
}

// run serves the client until it goes away, then releases everything.
func (c *client) run() error {
	go c.watchConn()
	c.loop()
	c.teardown()
	reason := c.reason
	switch {
	case reason == nil || errors.Is(reason, ErrClosed):
		c.log.Info("shim client detached", "reason", fmtReason(reason))
	case errors.Is(reason, ErrProtocol):
		c.log.Warn("shim client dropped", "reason", reason)
		c.d.stats.dropped.Add(1)
	default:
		c.log.Info("shim client detached", "reason", reason)
	}
	close(c.done)
	if errors.Is(reason, ErrClosed) {
		return nil
	}
	return reason
}

func fmtReason(err error) string {
	if err == nil {
		return "disconnected"
	}
	return err.Error()
}

// watchConn turns EOF (or any byte) on the control connection into stop.
func (c *client) watchConn() {
	var b [1]byte
	n, err := c.conn.Read(b[:])
	switch {
	case n > 0:
		c.violation("byte %#x on the control connection after attach", b[0])
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		c.stop(nil)
		c.releaseListeners()
	default:
		c.stop(fmt.Errorf("control connection: %w", err))
	}
}

// loop consumes requests and kicks, sleeping on the doorbell when idle.
func (c *client) loop() {
	var db [8]byte
	for !c.stopped() {
		progress, cmplFull := c.serveRequests()
		if c.fillWanted.Swap(false) {
			c.fillRings()
			progress = true
		}
		if c.sweepWanted.Swap(false) {
			c.sweepRings()
			progress = true
		}
		if c.serveKicks() {
			progress = true
		}
		if progress || c.stopped() {
			continue
		}
		// Sleep handshake: flag, then re-check everything we wait for.
		flag := uint32(abi.DSleepReq)
		if cmplFull {
			flag |= abi.DSleepCmpl
		}
		atomic.StoreUint32(&c.hdr.Daemon_sleeping, flag)
		if c.workPending(cmplFull) {
			atomic.StoreUint32(&c.hdr.Daemon_sleeping, 0)
			continue
		}
		_, err := c.doorbell.Read(db[:])
		if err == nil && c.d.loseDoorbell.Load() && c.d.loseDoorbell.CompareAndSwap(true, false) {
			// LoseNextDoorbell: as if this wake-up never came.
			atomic.StoreUint32(&c.hdr.Daemon_sleeping, 0)
			c.d.doorbellLost.Store(true)
			_, err = c.doorbell.Read(db[:])
		}
		atomic.StoreUint32(&c.hdr.Daemon_sleeping, 0)
		if err != nil && !errors.Is(err, syscall.EAGAIN) {
			c.stop(fmt.Errorf("read doorbell: %w", err))
		}
	}
}

// workPending re-checks the conditions the loop sleeps on.
func (c *client) workPending(cmplFull bool) bool {
	if c.fillWanted.Load() || c.sweepWanted.Load() {
		return true
	}
	if cmplFull {
		if free, err := c.cmpls.Free(); err != nil || free > 0 {
			return true
		}
	} else if n, err := c.reqs.Pending(); err != nil || n > 0 {
		return true
	}
	for i := range c.kickMap {
		if atomic.LoadUint64(&c.kickMap[i]) != 0 {
			return true
		}
	}
	return false
}

// serveRequests serves up to one ring's worth of requests. cmplFull reports
// that it stopped because the completion ring had no room.
func (c *client) serveRequests() (progress, cmplFull bool) {
	posted := false
	c.batching.Store(true)
	defer func() {
		c.batching.Store(false)
		if c.deferred.Swap(false) || posted {
			c.notifyShim()
		}
	}()
	for range c.seg.Layout.ReqEntries {
		free, err := c.cmpls.Free()
		if err != nil {
			c.violation("completion ring: %v", err)
			return progress, false
		}
		if free == 0 {
			return progress, true
		}
		var req abi.Req
		ok, err := c.reqs.Pop(&req)
		if err != nil {
			c.violation("request ring: %v", err)
			return progress, false
		}
		if !ok {
			return progress, false
		}
		progress = true
		cmpl := c.serve(&req)
		if c.stopped() {
			return progress, false
		}
		if ok, err := c.cmpls.Push(&cmpl); !ok || err != nil {
			c.violation("completion ring refused a completion it had room for: %v", err)
			return progress, false
		}
		posted = true
	}
	return progress, false
}

// serveKicks hands every kicked slot to its socket's pumps.
func (c *client) serveKicks() bool {
	any := false
	var release func()
	defer func() {
		if release != nil {
			release() // one kick per shard for the pass's answers
		}
	}()
	for w := range c.kickMap {
		bits := abi.TakeWord(c.kickMap, w)
		if bits != 0 && release == nil {
			if h, ok := c.d.opts.Backend.(txHolder); ok {
				release = h.HoldTx()
			}
		}
		for bits != 0 {
			any = true
			b := uint32(trailingZeros(bits))
			bits &^= 1 << b
			c.mu.Lock()
			ref := c.slots[uint32(w)*64+b]
			c.mu.Unlock()
			if ref != nil {
				ref.s.kickFromLoop(ref, c.scratch())
			}
		}
	}
	return any
}

// scratch returns the loop's buffer for the sends it makes itself
// (sendInlineLocked). Only the client loop calls it.
func (c *client) scratch() []byte {
	if c.txBuf == nil {
		c.txBuf = make([]byte, inlineTxMax)
	}
	return c.txBuf
}

func trailingZeros(v uint64) int {
	n := 0
	for v&1 == 0 {
		v >>= 1
		n++
	}
	return n
}

// notifyChanged wakes the shim after a readiness change: at once, or,
// while the loop serves a batch of requests, with the loop's wake-up after
// it. The second look at batching closes the race with the batch's end:
// either the loop's Swap sees deferred, or this goroutine sees batching
// cleared and wakes itself (Go's atomics are sequentially consistent).
func (c *client) notifyChanged() {
	if c.batching.Load() {
		c.deferred.Store(true)
		if c.batching.Load() {
			return
		}
	}
	c.notifyShim()
}

// notifyShim wakes the shim if any of its threads sleeps. For clients
// that acknowledge wake-ups, only when none is in flight (the header's
// wake coalescing rule); concurrent callers race on the compare-and-swap
// and one of them writes.
func (c *client) notifyShim() {
	if atomic.LoadUint32(&c.hdr.Shim_waiters) == 0 {
		return
	}
	if c.wakeAck {
		seq := atomic.LoadUint32(&c.hdr.Wake_seq)
		if atomic.LoadUint32(&c.hdr.Wake_ack) != seq &&
			time.Since(time.Unix(0, c.lastWake.Load())) < wakeAckPatience {
			return // a wake-up is in flight; the shim re-checks after it
		}
		if !atomic.CompareAndSwapUint32(&c.hdr.Wake_seq, seq, seq+1) {
			return
		}
		c.lastWake.Store(time.Now().UnixNano())
	}
	c.wakeShim()
}

// wakeAckPatience is how long a wake-up may stay unacknowledged before the
// daemon writes the wake fd again: a shim that took one without
// acknowledging it (a bug) then stalls for this long, not for good.
const wakeAckPatience = time.Second

// teardown drops every reference the client holds, then unmaps. Its
// listeners close first, while the client is still among the daemon's:
// a CONNECT from another process (reapGoneClients) either finds it there
// or finds its listeners closed, never a client gone from the list whose
// listeners still accept (t_fork's "a listener the parent closed, served
// by the child" connected now and then on a loaded daemon).
func (c *client) teardown() {
	c.releaseListeners()
	c.d.removeClient(c)
	atomic.StoreUint32(&c.hdr.Daemon_state, abi.DaemonGone)
	c.wakeShim()
	// Connections left in accept rings go to the listeners' other holders.
	for _, r := range c.ringListeners() {
		c.reclaimRing(r)
	}
	c.mu.Lock()
	refs := make([]*sockRef, 0)
	for i, r := range c.slots {
		if r != nil {
			refs = append(refs, r)
			c.slots[i] = nil
		}
	}
	c.mu.Unlock()
	for _, r := range refs {
		r.s.detach(r)
	}
	c.unmap()
	c.conn.Close()
}

// lookup resolves a socket id from a request. An id whose slot is outside
// the table is a protocol violation (ok false, client stopping); a free or
// reused slot is EBADF.
func (c *client) lookup(id uint32) (*sockRef, syscall.Errno, bool) {
	slot := id & 0xffff
	if slot >= c.seg.Layout.Socks {
		c.violation("socket id %#x names slot %d of %d", id, slot, c.seg.Layout.Socks)
		return nil, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.slots[slot]
	if r == nil || uint32(r.gen) != id>>16 {
		return nil, syscall.EBADF, true
	}
	return r, 0, true
}

// allocSlot installs a new reference to s in a free slot (or in want, if
// want >= 0, with generation gen: fork inheritance).
func (c *client) allocSlot(s *socket, want int, gen uint16) (*sockRef, syscall.Errno) {
	return c.allocSlotWith(s, want, gen, nil)
}

// allocSlotWith is allocSlot for a connection that will wait in an accept
// ring (spot not nil): it is marked so before the slot is in the table.
func (c *client) allocSlotWith(s *socket, want int, gen uint16, spot *ringSpot) (*sockRef, syscall.Errno) {
	c.mu.Lock()
	slot := -1
	if want >= 0 {
		if want >= len(c.slots) || c.slots[want] != nil {
			c.mu.Unlock()
			return nil, syscall.EEXIST
		}
		slot = want
	} else {
		for i, r := range c.slots {
			if r == nil {
				slot = i
				break
			}
		}
		if slot < 0 {
			c.mu.Unlock()
			return nil, syscall.EMFILE
		}
		gen = c.gens[slot] + 1
		if gen == 0 {
			gen = 1
		}
	}
	c.gens[slot] = gen
	sh := c.seg.Sock(uint32(slot))
	// The slot is FREE: the shim does not touch it, so the daemon may
	// reset the shim's fields too.
	atomic.StoreUint32(&sh.Rx_tail, 0)
	atomic.StoreUint32(&sh.Rx_head, 0)
	atomic.StoreUint32(&sh.Tx_head, 0)
	atomic.StoreUint32(&sh.Tx_tail, 0)
	atomic.StoreUint32(&sh.D_flags, 0)
	atomic.StoreUint32(&sh.S_flags, 0)
	atomic.StoreInt32(&sh.Accept_waiters, 0)
	atomic.StoreUint32(&sh.Accept_pending, 0)
	atomic.StoreInt32(&sh.So_error, 0)
	atomic.StoreUint32(&sh.Events, 0)
	atomic.StoreUint32(&sh.Gen, uint32(gen))
	r := &sockRef{c: c, slot: uint32(slot), gen: gen, s: s, sh: sh, dups: 1, acceptCPU: -1}
	if spot != nil {
		r.pending.Store(spot)
	}
	r.rx = abi.NewFIFOProducer(c.seg.RxBuf(uint32(slot)), &sh.Rx_tail, &sh.Rx_head)
	r.tx = abi.NewFIFOConsumer(c.seg.TxBuf(uint32(slot)), &sh.Tx_head, &sh.Tx_tail)
	c.slots[slot] = r
	c.mu.Unlock()
	s.attach(r)
	return r, 0
}

// freeSlot removes r from the table (the caller detaches it from its
// socket).
func (c *client) freeSlot(r *sockRef) {
	c.mu.Lock()
	if c.slots[r.slot] == r {
		c.slots[r.slot] = nil
		atomic.StoreUint32(&r.sh.Events, abi.EvWord(abi.StFree, 0))
		atomic.StoreUint32(&r.sh.State, abi.StFree)
	}
	c.mu.Unlock()
}

// id returns the socket id of r.
func (r *sockRef) id() uint32 { return uint32(r.gen)<<16 | r.slot }

// releaseListeners closes at once the backend listeners that only this
// (exited) client holds, so its ports stop accepting as soon as the exit
// is seen, as the kernel closes them before the parent's waitpid returns;
// the rest of the teardown follows on the client loop. It touches socket
// state only, never the segment.
func (c *client) releaseListeners() {
	c.mu.Lock()
	var socks []*socket
	for _, r := range c.slots {
		if r != nil {
			socks = append(socks, r.s)
		}
	}
	c.mu.Unlock()
	for _, s := range socks {
		s.mu.Lock()
		only := s.holds == 0
		for _, r := range s.refs {
			if r.c != c {
				only = false
			}
		}
		if only && s.state == abi.StListening && s.ln != nil {
			s.closeListenerLocked() // the accept loop sees ln change and exits quietly
			s.dropQueuedLocked()
		}
		s.mu.Unlock()
	}
}
