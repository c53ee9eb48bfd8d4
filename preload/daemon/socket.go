package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/stack"
)

// sockRef is one client's reference to a socket: a slot in that client's
// table with its own FIFOs. dups counts the client's DUPs of it.
//
// c, slot, gen, s and sh never change. rx, tx and broken are used only
// under s.mu while the reference is attached. dups is the client loop's.
type sockRef struct {
	c      *client
	slot   uint32
	gen    uint16
	s      *socket
	sh     *abi.Sock
	rx     *abi.FIFOProducer
	tx     *abi.FIFOConsumer
	broken bool // its client wrote a bad FIFO index; skip it
	dups   int

	// A listener's reference (under s.mu): acceptor says its ring was
	// filled once (its untaken records are reclaimed at its close;
	// acceptring.go); acceptCPU is the CPU its last ACCEPT named (-1:
	// none); ring holds the connections written into the ring, oldest
	// first, until the shim is seen past them.
	acceptor  bool
	acceptCPU int
	ring      []*sockRef
	fillAsk   atomic.Int32 // records arrivals asked this ring to take (askFill); the client loop fills it
	// A connection's reference while it waits in an accept ring.
	pending atomic.Pointer[ringSpot]
}

// socket is one TCP socket of the daemon, shared by every reference to it.
type socket struct {
	d *Daemon

	mu         sync.Mutex // guards everything below
	refs       []*sockRef // attached references; refs[0] receives (the owner)
	holds      int        // fork holds (references prepared for a child)
	dead       bool       // no references and no holds left: being torn down
	state      uint32     // abi.St*
	events     uint32     // abi.Ev*
	soError    syscall.Errno
	bound      netip.AddrPort
	isBound    bool
	owner      uint32         // effective uid of the process that created it: its SO_REUSEPORT group
	family     int32          // AF_INET or AF_INET6: how its addresses travel (addr.go)
	bindAsked  netip.AddrPort // the address bind asked for (port 0 kept), for a handover
	reserved   BoundSocket    // from a Binder backend: the address bind reserved
	opts       map[optKey][]byte
	backlog    int             // how many connections the daemon queues (prefetches; not in direct mode)
	direct     syscall.RawConn // the listener's kernel fd: accept directly (direct_linux.go)
	directFile *os.File        // the dup of that fd; closed with ln
	kqueued    int             // direct: connections in the kernel's (or netstack's) accept queue
	sdirect    *stack.Listener // direct accept from netstack's queues (stackdirect.go)
	ln         net.Listener
	acceptQ    acceptQueue
	orphans    []*socket // accepted, taken back from a ring nobody emptied (acceptring.go); each holds a hold
	fillNext   int       // where ringTargetLocked starts looking, so that clients take turns
	shard      int       // an accepted connection: the shard it came from
	conn       net.Conn
	cancel     context.CancelFunc // cancels a dial in progress
	shutWr     bool               // FIN requested: send after the tx FIFOs drain
	shutRd     bool
	wrDone     bool        // CloseWrite done (or the conn is gone)
	txEPIPE    bool        // a send failed with EPIPE, left to the rx pump to report (txPump)
	txBusy     bool        // the tx pump is writing, unlocked: bytes it took are not sent yet
	txPumpOn   bool        // the tx pump runs (started at once, or when first needed: startTxPumpLocked)
	rxOut      bool        // the rx pump has left its read loop (EOF, an error, or the close)
	rxEC       eventConn   // the receive side runs on readiness (rxevent.go); nil: an rx pump
	rxW        *rxWorker   // rxEC's worker
	rxStop     func()      // ends rxEC's callbacks
	rxBlocked  bool        // rxEC: bytes wait for FIFO room or an owner
	rxEOF      bool        // rxEC: the peer's FIN was read; a reset may follow
	rxQueued   atomic.Bool // rxEC: on rxW's queue
	rxPend     []byte      // received, not yet in the owner's rx FIFO
	txPend     []byte      // taken from closed references, not yet sent
	linger0    bool        // SO_LINGER {1, 0}: reset on close
	kickRx     chan struct{}
	kickTx     chan struct{}
	space      chan struct{} // the accept queue has room
	gone       chan struct{} // closed when dead
}

// pumpBufs holds the pumps' copy buffers: a short connection should not
// allocate (and zero) 128 KiB.
var pumpBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// smallBufs holds the rx pumps' first read buffers (4 KiB), so that a
// short connection does not allocate and zero one.
var smallBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

func newSocket(d *Daemon) *socket {
	s := &socket{d: d, state: abi.StOpen, family: syscall.AF_INET,
		kickRx: make(chan struct{}, 1), kickTx: make(chan struct{}, 1), space: make(chan struct{}, 1),
		gone: make(chan struct{})}
	d.addSocket(s)
	return s
}

// setOptLocked records an option's value. The map is made on the first
// one: most accepted connections never set any, and reading a nil map is
// reading an empty one.
func (s *socket) setOptLocked(k optKey, v []byte) {
	if s.opts == nil {
		s.opts = make(map[optKey][]byte)
	}
	s.opts[k] = v
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// kickLocked wakes both pumps (the shim freed rx space or wrote tx bytes).
func (s *socket) kickLocked() {
	s.rxKickLocked()
	s.wakeTxLocked()
}

// kickFromLoop is kick for the client loop serving the shim's kick: a
// short answer is sent at once (sendInlineLocked, with buf the loop's
// scratch), and the tx pump wakes only when it has work left.
func (s *socket) kickFromLoop(r *sockRef, buf []byte) {
	s.mu.Lock()
	s.rxKickLocked()
	if s.conn == nil || !s.sendInlineLocked(buf) {
		s.wakeTxLocked()
	}
	if !r.broken && r.c.txNospace {
		s.txRoomLocked(r) // the shim may have raised the flag after the room came
	}
	s.mu.Unlock()
}

// attach adds r and shows it the socket's current state.
func (s *socket) attach(r *sockRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refs = append(s.refs, r)
	if s.conn != nil && !s.txPumpOn {
		// The loop sends on this reference's kicks (establishedLocked).
		atomic.OrUint32(&r.sh.D_flags, abi.DFTxWait)
	}
	s.publishRefLocked(r)
	if len(s.rxPend) > 0 && !s.dead {
		s.deliverSomeLocked() // bytes left by a previous owner
	}
	s.kickLocked()
}

// detach drops r from the socket: its unread rx bytes go back to rxPend
// (for the next owner), its unsent tx bytes to txPend. The last reference
// (with no fork holds left) closes the socket.
func (s *socket) detach(r *sockRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := -1
	for j, x := range s.refs {
		if x == r {
			i = j
		}
	}
	if i < 0 {
		return
	}
	// A listener's rx FIFO is its accept ring, not stream bytes: its
	// records name this client's slots (reclaimRing took them back).
	stream := !r.acceptor && s.state != abi.StListening
	if !r.broken && stream {
		// The owner leaves but the socket lives on (other references, or
		// a fork child yet to claim it): unread bytes go to the next owner.
		if used, err := r.rx.Used(); err == nil && used > 0 && i == 0 && (len(s.refs) > 1 || s.holds > 0) {
			buf := make([]byte, used)
			if n, err := r.rx.Unread(buf); err == nil && n > 0 {
				s.rxPend = append(buf[:n:n], s.rxPend...)
			}
		}
		if used, err := r.tx.Used(); err == nil && used > 0 && s.conn != nil {
			// A short answer written just before the close leaves here,
			// on the client loop serving the close, without a copy and
			// a hop to the tx pump; what it cannot send goes to txPend.
			s.sendInlineLocked(r.c.scratch())
		}
		if used, err := r.tx.Used(); err == nil && used > 0 {
			buf := make([]byte, used)
			if n, err := r.tx.Read(buf); err == nil && n > 0 {
				s.txPend = append(s.txPend, buf[:n]...)
			}
		}
	}
	if len(s.refs) == 1 && s.holds == 0 && !r.broken && stream {
		// The last close with received bytes nobody read resets the
		// connection, as the kernel does.
		if used, err := r.rx.Used(); err == nil && used > 0 || len(s.rxPend) > 0 {
			s.linger0 = true
		}
	}
	s.refs = append(s.refs[:i], s.refs[i+1:]...)
	if i == 0 && len(s.rxPend) > 0 && len(s.refs) > 0 {
		s.deliverSomeLocked() // to the next owner
	}
	if !stream && len(s.refs) > 0 {
		// An arrival may have left its connections unpublished for r's
		// client to take into its ring (arrivedLocked): the others see
		// them now.
		s.refreshQueuedLocked()
	}
	s.kickLocked()
	s.maybeDieLocked()
}

// maybeDieLocked tears the socket down when nothing refers to it.
func (s *socket) maybeDieLocked() {
	if len(s.refs) > 0 || s.holds > 0 || s.dead {
		return
	}
	s.dead = true
	close(s.gone)
	if s.cancel != nil {
		s.cancel()
	}
	s.closeListenerLocked()
	if s.reserved != nil {
		s.reserved.Close()
		s.reserved = nil
	}
	s.dropQueuedLocked()
	if s.conn == nil {
		s.d.removeSocket(s)
		return
	}
	closed := false
	if s.linger0 {
		s.resetConnLocked()
		closed = true
	} else if _, ok := s.conn.(tryWriter); ok && !s.txBusy && len(s.txPend) == 0 {
		// Nothing left to send: close here (netstack sends the FIN
		// after what it holds), not after a hop to the tx pump, which
		// wakes on gone and only finds the conn closed.
		s.finishLocked()
		closed = true
	}
	switch {
	case s.txPumpOn:
		// It wakes on gone, sends txPend, closes the conn and removes
		// the socket.
	case closed:
		s.d.removeSocket(s)
	default:
		s.startTxPumpLocked() // txPend to send first
	}
}

// finishLocked closes the conn of a socket nothing refers to any more, as
// the kernel's close does: a FIN after the bytes sent, and a reset if
// bytes came that nobody read. The rx pump may hold such bytes, read just
// before the close and not yet delivered; closing the conn under it would
// send a FIN and lose them without the reset. So the FIN goes now
// (CloseWrite) and the rx pump, woken by a past read deadline, closes the
// conn itself: with a reset if it holds bytes (rxPump). Once it has left
// its read loop (EOF, an error), the conn is closed here.
func (s *socket) finishLocked() {
	if s.rxEC != nil {
		// No read is under way outside the lock: bytes read and not
		// delivered are in rxPend; netstack resets itself for those it
		// holds.
		s.stopRxLocked()
		if len(s.rxPend) > 0 {
			s.resetConnLocked()
		} else {
			s.conn.Close()
		}
		return
	}
	if s.rxOut {
		s.conn.Close()
		return
	}
	if cw, ok := s.conn.(closeWriter); ok {
		cw.CloseWrite()
	}
	s.conn.SetReadDeadline(time.Unix(1, 0))
}

// resetConnLocked closes the conn with a reset (SO_LINGER {1, 0}).
func (s *socket) resetConnLocked() {
	s.stopRxLocked()
	if l, ok := s.conn.(lingerer); ok {
		l.SetLinger(0)
	}
	s.conn.Close()
}

// abort closes the socket at once (daemon shutdown).
func (s *socket) abort() {
	s.mu.Lock()
	s.refs, s.holds = nil, 0
	s.maybeDieLocked()
	if s.conn != nil {
		s.stopRxLocked()
		s.conn.Close()
	}
	s.mu.Unlock()
}

// owner returns the reference that receives, or nil.
func (s *socket) ownerLocked() *sockRef {
	for _, r := range s.refs {
		if !r.broken {
			return r
		}
	}
	return nil
}

// breakRef marks r unusable and drops its client (it wrote a bad index).
func (s *socket) breakRefLocked(r *sockRef, err error) {
	r.broken = true
	r.c.violation("socket slot %d: %v", r.slot, err)
}

// publishLocked shows the socket's state to every reference and wakes the
// shims that sleep.
func (s *socket) publishLocked() {
	for _, r := range s.refs {
		s.publishRefLocked(r)
	}
}

func (s *socket) publishRefLocked(r *sockRef) {
	if s.storeRefLocked(r) {
		r.c.published(r.slot, r.sh)
	}
}

// publishQuietLocked shows the state without an edge: for changes that
// only take readiness away (an accept took a queued connection, SO_ERROR
// was read), which epoll does not report as events.
func (s *socket) publishQuietLocked() {
	for _, r := range s.refs {
		s.storeRefLocked(r)
	}
}

func (s *socket) storeRefLocked(r *sockRef) bool {
	if r.broken {
		return false
	}
	sh := r.sh
	atomic.StoreInt32(&sh.So_error, int32(s.soError))
	atomic.StoreUint32(&sh.Accept_pending, uint32(s.acceptQ.len()+s.kqueued+len(s.orphans)))
	// State and events in one store (FSS_EV_STATE_MASK): a reader never
	// pairs one publish's state with another's events. State is a copy.
	atomic.StoreUint32(&sh.State, s.state)
	atomic.StoreUint32(&sh.Events, abi.EvWord(s.state, s.events))
	return true
}

// published bumps the sequence numbers for slot and wakes the shim if it
// sleeps: the tail of every readiness change.
func (c *client) published(slot uint32, sh *abi.Sock) {
	atomic.AddUint32(&sh.Ev_seq, 1)
	abi.SetBit(c.readyMap, slot)
	atomic.AddUint32(&c.hdr.Ev_seq, 1)
	c.notifyChanged()
}

// setErrorLocked records a connection error: so_error, ERR and HUP.
func (s *socket) setErrorLocked(e syscall.Errno) {
	s.markErrorLocked(e)
	s.publishLocked()
}

// markErrorLocked is setErrorLocked without the publish, for a caller that
// changes more before it publishes: every publish is an edge (ev_seq), and
// one change must be one edge, as the kernel's one wake-up, or an EPOLLET
// set that already reported the first half reports the second.
func (s *socket) markErrorLocked(e syscall.Errno) {
	if s.soError == 0 {
		s.soError = e
	}
	s.events |= abi.EvErr | abi.EvHup | abi.EvRdEOF | abi.EvWrEOF
	s.events &^= abi.EvConnected
	s.state = abi.StClosed
}

// established starts moving bytes on conn (accept or connect done).
func (s *socket) establishedLocked(c net.Conn) {
	s.conn = c
	s.state = abi.StConnected
	s.events |= abi.EvConnected
	s.applyConnOptsLocked()
	_, lazy := c.(tryWriter)
	if lazy && !s.dead {
		// The client loop sends what the shim writes (sendInlineLocked)
		// and closes the conn when the last reference goes: the tx pump
		// starts only for what must wait (a long write, a FIN after the
		// FIFOs drain), so a short connection runs no goroutine for it.
		// The shim must see the kick request before it sees the
		// connection: it may write as soon as it does.
		s.askTxKicksLocked()
	} else {
		s.startTxPumpLocked()
	}
	s.publishLocked()
	if ec, ok := c.(eventConn); ok {
		s.startRxEventsLocked(ec)
		return
	}
	s.d.goSocket(s.rxPump)
}

// startTxPumpLocked starts the tx pump if it does not run yet; it runs
// until the socket dies.
func (s *socket) startTxPumpLocked() {
	if !s.txPumpOn {
		s.txPumpOn = true
		s.d.goSocket(s.txPump)
	}
}

// wakeTxLocked hands the send side to the tx pump: a signal if it runs,
// otherwise a start if there is work it must do (bytes the client loop
// could not send, a FIN to send once they are gone).
func (s *socket) wakeTxLocked() {
	switch {
	case s.txPumpOn:
		signal(s.kickTx)
	case s.conn == nil:
		// Not connected: establishedLocked decides.
	case len(s.txPend) > 0 || s.shutWr && !s.wrDone || s.txWaitingLocked():
		s.startTxPumpLocked()
	}
}

// rxPump copies conn -> rxPend -> the owner's rx FIFO.
func (s *socket) rxPump() {
	// Reads start with a small buffer, so an idle connection holds 4 KiB;
	// a read that fills it switches to a pooled 64 KiB one until reads get
	// short again.
	sp := smallBufs.Get().(*[]byte)
	small := *sp
	var big *[]byte
	var wait *time.Timer // deliverLocked's, reused
	defer func() {
		smallBufs.Put(sp)
		if big != nil {
			pumpBufs.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, err := s.conn.Read(buf)
		s.mu.Lock()
		if s.dead {
			// Closed (finishLocked): the conn is the rx pump's to
			// close. Bytes read now, or still waiting, were unread at
			// the close: reset, as the kernel's close does.
			if n > 0 || len(s.rxPend) > 0 {
				s.resetConnLocked()
			} else {
				s.conn.Close()
			}
			s.rxOut = true
			s.mu.Unlock()
			return
		}
		if n > 0 && !s.shutRd {
			data := buf[:n]
			if len(s.rxPend) == 0 {
				// Nothing waits before these bytes: straight into the
				// owner's FIFO, without a copy (and an allocation) into
				// rxPend on the way.
				k, _ := s.deliverBytesLocked(data)
				data = data[k:]
			}
			if len(data) > 0 {
				s.rxPend = append(s.rxPend, data...)
			}
		}
		// Only now, with the bytes copied out, may the buffer change.
		switch {
		case big == nil && n == len(small):
			big = pumpBufs.Get().(*[]byte)
		case big != nil && n < len(small):
			pumpBufs.Put(big)
			big = nil
		}
		if !s.deliverLocked(&wait) {
			s.conn.Close() // died while delivering (reset there if bytes were left)
			s.rxOut = true
			s.mu.Unlock()
			return
		}
		if err != nil {
			s.rxOut = true
			s.rxDoneLocked(err)
			s.mu.Unlock()
			if errors.Is(err, io.EOF) {
				s.watchReset()
			}
			return
		}
		s.mu.Unlock()
	}
}

// watchReset waits, after the peer's FIN, for a reset (which a Read no
// longer reports) on backends whose conns expose their fd. Without it a
// reset after FIN shows only when a write fails.
func (s *socket) watchReset() {
	if rw, ok := s.conn.(resetWaiter); ok {
		// The stack backend's conns (stack.Conn) say so themselves.
		if err := rw.WaitReset(s.gone); err != nil {
			s.mu.Lock()
			if !s.dead && s.state != abi.StClosed { // not already failed (a write may have seen it first)
				s.setErrorLocked(errnoOfRead(err))
			}
			s.mu.Unlock()
		}
		return
	}
	sc, ok := s.conn.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	// After a FIN, recv reports EOF even once a reset came (SOCK_DONE is
	// checked before sk_err), so ask for the pending error instead.
	var rerr error
	rc.Read(func(fd uintptr) bool {
		e, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			rerr = err
		case e != 0:
			rerr = syscall.Errno(e)
		default:
			return false // still just EOF: wait for the next event
		}
		return true
	})
	if rerr == nil {
		return // the conn was closed
	}
	s.mu.Lock()
	if !s.dead {
		s.setErrorLocked(errnoOfRead(rerr))
	}
	s.mu.Unlock()
}

// deliverLocked moves rxPend into the owner's FIFO, waiting (unlocked) for
// space (wait is the caller's timer for waitLocked). It returns false if
// the socket died meanwhile.
func (s *socket) deliverLocked(wait **time.Timer) bool {
	for len(s.rxPend) > 0 {
		if s.dead {
			// Bytes for a socket nobody holds any more: the kernel answers
			// data to a closed socket with a reset; so do we.
			s.resetConnLocked()
			return false
		}
		if !s.deliverSomeLocked() {
			s.waitLocked(s.kickRx, wait)
		}
	}
	s.rxPend = nil
	return !s.dead
}

// deliverSomeLocked moves what fits of rxPend into the owner's FIFO without
// waiting. It returns false if bytes remain and the caller must wait (no
// owner yet, only fork holds; or the FIFO is full, with FSS_DF_RX_WAIT set
// so the shim kicks when it reads). Besides the rx pump, attach and detach
// call it: the pump may be blocked in Read while bytes moved between
// owners wait in rxPend.
func (s *socket) deliverSomeLocked() bool {
	n, done := s.deliverBytesLocked(s.rxPend)
	s.rxPend = s.rxPend[n:]
	return done
}

// deliverBytesLocked moves what fits of p into the owner's FIFO without
// waiting and returns how much it moved; done is false when bytes remain
// and the caller must wait, as for deliverSomeLocked.
func (s *socket) deliverBytesLocked(p []byte) (n int, done bool) {
	for n < len(p) {
		r := s.ownerLocked()
		if r == nil {
			return n, false
		}
		w, err := r.rx.Write(p[n:])
		if err != nil {
			s.breakRefLocked(r, err)
			continue
		}
		if w > 0 {
			n += w
			atomic.AndUint32(&r.sh.D_flags, ^uint32(abi.DFRxWait))
			r.c.published(r.slot, r.sh)
			continue
		}
		// Full: ask for a kick, then re-check before giving up.
		atomic.OrUint32(&r.sh.D_flags, abi.DFRxWait)
		if free, err := r.rx.Free(); err == nil && free > 0 {
			continue
		}
		return n, false
	}
	return n, true
}

// waitLocked releases mu until ch is signalled or the socket dies. *t is
// the calling goroutine's timer, made on first use and reused: a timer per
// wait (time.After) costs an allocation and leaves a live timer for a
// second, and the pumps wait once per request.
func (s *socket) waitLocked(ch chan struct{}, t **time.Timer) {
	s.mu.Unlock()
	if *t == nil {
		*t = time.NewTimer(time.Second)
	} else {
		(*t).Reset(time.Second)
	}
	select {
	case <-ch:
	case <-s.gone:
	case <-(*t).C: // belt and braces against a lost kick
	}
	(*t).Stop()
	s.mu.Lock()
}

// rxDoneLocked records the end of the receive side.
func (s *socket) rxDoneLocked(err error) {
	if s.dead {
		return
	}
	if errors.Is(err, io.EOF) {
		if s.txEPIPE {
			s.setErrorLocked(syscall.EPIPE)
			return
		}
		s.events |= abi.EvRdEOF
		if s.wrDone {
			s.events |= abi.EvHup
		}
	} else {
		s.setErrorLocked(errnoOfRead(err))
		return
	}
	s.publishLocked()
}

// txPump copies every reference's tx FIFO (and txPend) -> conn.
func (s *socket) txPump() {
	defer s.d.removeSocket(s)
	var wait *time.Timer // waitLocked's, reused
	// The copy buffer is held only while there is something to send: an
	// idle connection keeps no 64 KiB buffer.
	var bp *[]byte
	release := func() {
		if bp != nil {
			pumpBufs.Put(bp)
			bp = nil
		}
	}
	defer release()
	for {
		s.mu.Lock()
		n := 0
		if len(s.txPend) > 0 || s.txWaitingLocked() {
			if bp == nil {
				bp = pumpBufs.Get().(*[]byte)
			}
			n = s.collectLocked(*bp)
		}
		if n == 0 {
			release()
			if s.dead {
				s.finishLocked()
				s.mu.Unlock()
				return
			}
			if s.shutWr && !s.wrDone {
				s.wrDone = true
				if cw, ok := s.conn.(closeWriter); ok {
					cw.CloseWrite()
				}
				if s.events&abi.EvRdEOF != 0 {
					s.events |= abi.EvHup
				}
				s.publishLocked()
			}
			if s.events&abi.EvErr != 0 && s.wrDone {
				s.mu.Unlock()
				<-s.gone
				s.mu.Lock()
				s.finishLocked()
				s.mu.Unlock()
				return
			}
			// Empty: ask for kicks, re-check, then wait.
			s.askTxKicksLocked()
			if s.txWaitingLocked() {
				s.mu.Unlock()
				continue
			}
			s.waitLocked(s.kickTx, &wait)
			s.mu.Unlock()
			continue
		}
		s.txBusy = true
		s.mu.Unlock()
		_, err := s.conn.Write((*bp)[:n])
		s.mu.Lock()
		s.txBusy = false
		if err != nil {
			s.wrDone = true
			switch e := errnoOfWrite(err); {
			case s.dead:
			case e == syscall.EPIPE && s.events&abi.EvRdEOF == 0:
				// A reset while the receive side is open: the
				// kernel hands its error (ECONNRESET) to whichever
				// call comes first and EPIPE to the later ones, and
				// the rx pump, reading, took it and reports it (a
				// send the shim queued before the reset came, sent
				// late by a busy daemon, must not turn the
				// application's ECONNRESET into EPIPE). If the rx
				// pump ends with EOF instead, it reports EPIPE.
				s.txEPIPE = true
			default:
				s.setErrorLocked(e)
			}
		}
		s.mu.Unlock()
	}
}

// collectLocked takes up to len(buf) bytes to send.
func (s *socket) collectLocked(buf []byte) int {
	n := copy(buf, s.txPend)
	s.txPend = s.txPend[n:]
	if len(s.txPend) == 0 {
		s.txPend = nil
	}
	for _, r := range s.refs {
		if n == len(buf) {
			break
		}
		if r.broken {
			continue
		}
		k, err := r.tx.Read(buf[n:])
		if err != nil {
			s.breakRefLocked(r, err)
			continue
		}
		if k > 0 {
			n += k
			atomic.AndUint32(&r.sh.D_flags, ^uint32(abi.DFTxWait))
			s.txRoomLocked(r)
		}
	}
	if n > 0 && s.wrDone {
		// Written after the connection failed or was shut: discard.
		return 0
	}
	return n
}

// txRoomLocked shows r's shim the room a read of its tx FIFO freed, when
// anyone may wait for it (fsstack_abi.h, section 5). A shim without
// FSS_HELLO_TX_NOSPACE is shown every read. One with it only once it raised
// FSS_SF_TX_NOSPACE (a send ran short, a poll found no room, a close
// lingers) and the FIFO is writable again by its poll rule (a third free),
// the flag cleared first: a writer that never ran short wakes nobody, as
// the kernel's writers do not without SOCK_NOSPACE. Before, every answer
// the loop took from the FIFO woke a shim asleep in epoll_wait, for an
// EPOLLOUT that its application had not asked for.
func (s *socket) txRoomLocked(r *sockRef) {
	if !r.c.txNospace {
		r.c.published(r.slot, r.sh)
		return
	}
	// After the read's store of tx_head (sequentially consistent): either
	// this load sees the flag or the shim's look after raising it sees the
	// room.
	if atomic.LoadUint32(&r.sh.S_flags)&abi.SFTxNospace == 0 {
		return
	}
	used, err := r.tx.Used()
	if size := uint32(r.tx.Size()); err != nil || !abi.TxWritable(size-used, size) {
		return // not writable yet: a later read looks again
	}
	atomic.AndUint32(&r.sh.S_flags, ^uint32(abi.SFTxNospace))
	r.c.published(r.slot, r.sh)
}

// inlineTxMax is the most the client loop sends itself for one kick on a
// conn that cannot read the FIFOs itself (see sendInlineLocked); more
// waits for the tx pump.
const inlineTxMax = 16 << 10

// sendInlineLocked sends what the shim wrote, on the caller's goroutine
// (the client loop, serving the shim's kick), when that needs no wait: the
// conn takes bytes without blocking (tryWriter), the tx pump is idle and
// nothing else is pending on the send side (a FIN, a close, an error,
// bytes of a closed reference), and what waits fits buf. The answer to a
// request then leaves without a hop to the tx pump's goroutine, which
// costs a wake-up per request. It returns false when the tx pump must look
// (it did not send, or sent part: the rest is in txPend, in order, as the
// pump was idle and txPend empty). A conn that reads the FIFOs itself
// (fifoSender) takes the bytes straight from them, with no bound but its
// send buffer (sendFromFIFOsLocked).
func (s *socket) sendInlineLocked(buf []byte) bool {
	tw, ok := s.conn.(tryWriter)
	if !ok || s.dead || s.txBusy || s.wrDone || s.shutWr || len(s.txPend) > 0 || s.events&abi.EvErr != 0 {
		return false
	}
	if fw, ok := s.conn.(fifoSender); ok {
		return s.sendFromFIFOsLocked(fw)
	}
	used := 0
	for _, r := range s.refs {
		if r.broken {
			continue
		}
		u, err := r.tx.Used()
		if err != nil {
			return false // the pump's collect breaks the reference
		}
		used += int(u)
	}
	if used == 0 {
		return true // a kick for the receive side only
	}
	if used > len(buf) {
		return false
	}
	n := s.collectLocked(buf)
	k, err := tw.TryWrite(buf[:n])
	// collect took the tx-wait flag down for the references it read;
	// the pump, parked, relies on it being up: raise it again.
	s.askTxKicksLocked()
	if err != nil || k < n {
		// The pump sends the rest (and meets the error again, which
		// it reports as for any send).
		s.txPend = append([]byte(nil), buf[k:n]...)
		return false
	}
	// Bytes written after the collect found no kick to ask for.
	return !s.txWaitingLocked()
}

// fifoSender is a conn that takes bytes straight from a reader
// (stack.Conn.TryWriteFrom): the next n bytes of r, as many as its send
// buffer takes now.
type fifoSender interface {
	TryWriteFrom(r io.Reader, n int) (int, error)
}

// sendFromFIFOsLocked is sendInlineLocked for a conn that reads the tx
// FIFOs itself: netstack copies each reference's bytes from its FIFO
// straight into its send buffer, as many as the buffer takes, with no
// scratch copy and no bound on the size. What it does not take stays in
// the FIFO, in order, for the tx pump (returns false).
func (s *socket) sendFromFIFOsLocked(c fifoSender) bool {
	for _, r := range s.refs {
		if r.broken {
			continue
		}
		used, err := r.tx.Used()
		if err != nil {
			return false // the pump's collect breaks the reference
		}
		if used == 0 {
			continue
		}
		n, err := c.TryWriteFrom(r.tx, int(used))
		if n > 0 {
			s.txRoomLocked(r)
		}
		if err != nil || n < int(used) {
			// The pump sends the rest (and meets the error again,
			// which it reports as for any send).
			return false
		}
	}
	// Raised again after the reads (the shim kicks after its next
	// write), then a look for bytes written before it was up.
	s.askTxKicksLocked()
	return !s.txWaitingLocked()
}

// askTxKicksLocked raises FSS_DF_TX_WAIT on every usable reference: the
// shim kicks after its next write.
func (s *socket) askTxKicksLocked() {
	for _, r := range s.refs {
		if !r.broken {
			atomic.OrUint32(&r.sh.D_flags, abi.DFTxWait)
		}
	}
}

func (s *socket) txWaitingLocked() bool {
	for _, r := range s.refs {
		if r.broken {
			continue
		}
		if used, err := r.tx.Used(); err != nil || used > 0 {
			return true
		}
	}
	return false
}

// acceptLoop fills the accept queue from the listener, up to the backlog.
func (s *socket) acceptLoop(ln net.Listener) {
	var wait *time.Timer // waitLocked's, reused
	for {
		s.mu.Lock()
		for !s.dead && s.ln == ln && s.acceptQ.len() >= s.backlog {
			s.waitLocked(s.space, &wait)
		}
		if s.dead || s.ln != ln {
			dead := s.dead
			s.mu.Unlock()
			if dead {
				s.d.removeSocket(s)
			}
			return
		}
		s.mu.Unlock()
		c, err := ln.Accept()
		s.mu.Lock()
		if err != nil {
			if dead := s.dead; dead || s.ln != ln {
				s.mu.Unlock()
				if dead {
					s.d.removeSocket(s)
				}
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				s.mu.Unlock()
				s.d.log.Warn("shim listener accept failed; retrying", "addr", ln.Addr(), "err", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			s.d.log.Error("shim listener failed", "addr", ln.Addr(), "err", err)
			s.setErrorLocked(errnoOf(err))
			s.mu.Unlock()
			return
		}
		if s.dead || s.ln != ln {
			c.Close()
			s.mu.Unlock()
			continue
		}
		s.acceptQ.push(c)
		s.publishLocked()
		s.mu.Unlock()
	}
}
