package daemon

import (
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/fsstack/fsstack/preload/abi"
)

// Accept rings (FSS_HELLO_ACCEPT_RING, docs/ARCHITECTURE.md decision 25).
//
// A listener's slot carries no stream, so its rx FIFO carries accept
// records instead: the daemon accepts on a client's behalf, installs the
// connection in that client's table and writes a record; the shim's
// accept takes it without a round trip. Everything that changes a
// client's table or its rings runs on that client's loop: an arrival only
// picks a client and asks its loop to fill (askFill). So the fill never
// races the client's CLOSE, FORK_PREPARE or teardown.
//
// Nothing is lost to a ring: records the shim has not taken when it
// closes the listener (or exits), or has left untaken too long while busy
// elsewhere (sweepRings), are claimed back and become orphans of the
// listener (a hold keeps each socket alive meanwhile), served first to the
// next ACCEPT or fill of any holder, and reset only when the listener
// itself closes, as the kernel resets its queue.

// ringSpot says where a connection waits in an accept ring: the listener
// reference whose ring holds it and its record's position (the ring's
// rx_tail before the record). written is false between the connection's
// install and its record.
type ringSpot struct {
	ln      *sockRef
	pos     uint32
	written bool
	at      time.Time // when it was written
}

// word is the record's sock word in the ring, which the shim (taking it)
// and the daemon (taking it back) claim with a compare-and-swap.
func (p *ringSpot) word() *uint32 {
	buf := p.ln.c.seg.RxBuf(p.ln.slot)
	return (*uint32)(unsafe.Pointer(&buf[p.pos%uint32(len(buf))]))
}

// claimBack takes connection reference nr back from its accept ring, if
// the shim has not taken it: true if the daemon has it now.
func (nr *sockRef) claimBack() bool {
	p := nr.pending.Load()
	if p == nil || p.taken() {
		return false
	}
	if p.written && !atomic.CompareAndSwapUint32(p.word(), nr.id(), abi.AcceptStolen) {
		return false // the shim claimed it first
	}
	return nr.pending.CompareAndSwap(p, nil)
}

// taken reports whether the shim has taken the record: its rx_head is past
// the record's start (the shim moves it by whole records).
func (p *ringSpot) taken() bool {
	return p.written && int32(atomic.LoadUint32(&p.ln.sh.Rx_head)-p.pos) > 0
}

// inRing reports whether r is a connection still waiting, untaken, in an
// accept ring.
func (r *sockRef) inRing() bool {
	p := r.pending.Load()
	return p != nil && !p.taken()
}

// ringUsedLocked is how many records of r's ring the shim has not taken
// (s.mu of r's listener held); -1 if the shim broke the indices.
func (r *sockRef) ringUsedLocked() int {
	used, err := r.rx.Used()
	if err != nil {
		return -1
	}
	return int(used / abi.AcceptRecSize)
}

// ringTargetLocked picks the reference whose client's loop should fill its
// ring with the connections that just arrived: one whose ring has room and
// whose process is asleep waiting for this listener right now (the shim's
// accept_waiters), the emptiest ring first, taking turns among equals.
// A process busy elsewhere, or one that holds the listener without
// accepting from it (a master process, a forked child, a parent that only
// connects), gets none: it might not accept for a long time, where the
// kernel's shared queue would let another holder take the connection.
// nil: none, the connections wait in the shared queue (accept_pending).
func (s *socket) ringTargetLocked() (*sockRef, int) {
	var best *sockRef
	bestRoom, bestLimit := 0, 0
	n := len(s.refs)
	for i := range n {
		r := s.refs[(s.fillNext+i)%n]
		if !r.ringWaitingLocked() {
			continue
		}
		limit, used := s.ringLimitLocked(r, 0), r.ringUsedLocked()
		if room := limit - used; used >= 0 && room > bestRoom {
			best, bestRoom, bestLimit = r, room, limit
		}
	}
	s.fillNext++
	return best, bestLimit
}

// ringLimitLocked is how many records r's ring may hold now. With one
// holder the listener's connections can go nowhere else: up to
// AcceptRingMax wait there. With several (the workers of one server, a
// prefork pool), no more than its process's waiting threads' weight
// (accept_waiters), less that of an ACCEPT in progress (serving), which
// is served: a worker that then stays busy with one connection keeps none
// from an idle worker, which the kernel's shared queue would not.
func (s *socket) ringLimitLocked(r *sockRef, serving int) int {
	limit := abi.AcceptRingMax
	if len(s.refs) > 1 {
		limit = min(limit, int(atomic.LoadInt32(&r.sh.Accept_waiters))-serving)
	}
	return limit
}

// askFill asks r's client loop to fill r's ring up to limit records (the
// limit while a thread waits: the loop may run after it woke; several asks
// before the loop runs take the largest).
func (r *sockRef) askFill(limit int) {
	for {
		old := r.fillAsk.Load()
		if int(old) >= limit || r.fillAsk.CompareAndSwap(old, int32(limit)) {
			break
		}
	}
	r.c.wantFill()
}

// ringWaitingLocked reports whether r's ring may be filled now: its client
// takes records and one of its threads sleeps waiting for the listener.
func (r *sockRef) ringWaitingLocked() bool {
	return !r.broken && r.c.acceptRing && !r.c.stopped() && atomic.LoadInt32(&r.sh.Accept_waiters) > 0
}

// arrivedLocked handles connections that arrived in the shared queue (n
// queued now, counted for accept_pending): a client's loop is asked to
// take them into its ring, or, when no ring can, they are published.
func (s *socket) arrivedLocked(n int) {
	if n > 0 {
		if r, limit := s.ringTargetLocked(); r != nil {
			r.askFill(limit)
			return // the fill publishes what it leaves (refreshQueuedLocked)
		}
	}
	s.updateKernelQueuedLocked(n)
}

// wantFill asks the client loop to fill its accept rings on its next pass,
// ringing its doorbell if it sleeps (the shim's rule: whoever clears the
// sleeping flag writes).
func (c *client) wantFill() {
	if c.fillWanted.Swap(true) {
		return // already asked; the loop has not looked yet
	}
	c.wakeLoop()
}

// armSweep makes sure a sweep of the accept rings follows in
// FSS_ACCEPT_STEAL_MS. The timer touches no shared memory (the client may
// be gone when it fires): it sets a flag and writes the doorbell, whose
// *os.File refuses writes once closed.
func (c *client) armSweep() {
	if c.sweepArmed.Swap(true) {
		return
	}
	db := c.doorbell // the loop's: unmap clears the field
	time.AfterFunc(acceptStealAfter, func() {
		c.sweepArmed.Store(false)
		c.sweepWanted.Store(true)
		var one = [8]byte{1}
		db.Write(one[:])
	})
}

// acceptStealAfter is how long a record may stay untaken before the daemon
// takes it back for another holder (FSS_ACCEPT_STEAL_MS).
const acceptStealAfter = abi.AcceptStealMS * time.Millisecond

// sweepRings takes back the records left untaken for acceptStealAfter
// while no thread of their process waits for the listener: it waited when
// they came and is busy elsewhere since, so another holder of the
// listener may have them, as it could take them from the kernel's shared
// queue. Only the client loop calls it. It arms the next sweep while
// records remain.
func (c *client) sweepRings() {
	lns := c.ringListeners()
	now := time.Now()
	left := false
	for _, r := range lns {
		var old []*sockRef
		r.s.mu.Lock()
		r.pruneRingLocked()
		for _, nr := range r.ring {
			if p := nr.pending.Load(); p != nil && p.written && now.Sub(p.at) >= acceptStealAfter {
				old = append(old, nr)
			} else {
				left = true
			}
		}
		// Nobody else could take them; or a thread of the process
		// still waits for the listener, and takes them when it runs.
		keep := len(r.s.refs) <= 1 || atomic.LoadInt32(&r.sh.Accept_waiters) > 0
		r.s.mu.Unlock()
		if keep {
			continue
		}
		for _, nr := range old {
			c.orphanPending(nr, r.s)
		}
		if len(old) > 0 {
			c.d.stats.acceptStolen.Add(uint64(len(old)))
		}
	}
	if left {
		c.armSweep()
	}
}

// ringListeners returns c's listener references whose rings were ever
// filled (acceptor).
func (c *client) ringListeners() []*sockRef {
	c.mu.Lock()
	defer c.mu.Unlock()
	var lns []*sockRef
	for _, r := range c.slots {
		if r != nil && r.acceptor {
			lns = append(lns, r)
		}
	}
	return lns
}

// wakeLoop rings the client loop's doorbell if it sleeps.
func (c *client) wakeLoop() {
	for {
		v := atomic.LoadUint32(&c.hdr.Daemon_sleeping)
		if v == 0 {
			return
		}
		if atomic.CompareAndSwapUint32(&c.hdr.Daemon_sleeping, v, 0) {
			var one = [8]byte{1}
			c.doorbell.Write(one[:])
			return
		}
	}
}

// fillRings fills the accept rings that arrivals asked for (fillAsk).
// Only the client loop calls it. The records' wake-up is one, after
// the pass.
func (c *client) fillRings() {
	type ask struct {
		r     *sockRef
		limit int
	}
	c.mu.Lock()
	var asks []ask
	for _, r := range c.slots {
		if r != nil {
			if limit := r.fillAsk.Swap(0); limit > 0 {
				asks = append(asks, ask{r, int(limit)})
			}
		}
	}
	c.mu.Unlock()
	c.batching.Store(true)
	for _, a := range asks {
		a.r.s.fillRing(a.r, true, a.limit)
	}
	c.batching.Store(false)
	if c.deferred.Swap(false) {
		c.notifyShim()
	}
}

// fillRing moves queued connections into r's ring while it has room, then
// publishes what is left in the shared queue. edge says the connections
// are news to the shim (an arrival): otherwise (they were published in
// accept_pending already) the records change no readiness, and an EPOLLET
// set must see no new edge, as accepting one of several queued
// connections makes none on the kernel.
//
// limit bounds the ring's depth (ringLimitLocked, taken by the caller).
func (s *socket) fillRing(r *sockRef, edge bool, limit int) {
	c := r.c
	for {
		s.mu.Lock()
		// The process was asleep waiting for this listener when the
		// connections arrived (ringTargetLocked): it looks at the
		// listener when it wakes, even if it woke for something else.
		if s.dead || s.state != abi.StListening || r.broken || !s.holdsRefLocked(r) {
			break
		}
		used := r.ringUsedLocked()
		if used < 0 || used >= min(limit, abi.AcceptRingMax) {
			break
		}
		r.pruneRingLocked()
		conn, orphan, shard, ok := s.takeLocked(r.acceptCPU)
		if !ok {
			break
		}
		opts := s.inheritedOptsLocked()
		s.mu.Unlock()

		spot := &ringSpot{ln: r}
		nr, peer, e := c.adopt(s, conn, orphan, shard, opts, spot)
		if e != 0 {
			s.mu.Lock()
			s.giveBackLocked(conn, orphan)
			break
		}
		s.mu.Lock()
		var rec abi.AcceptRec
		rec.Sock, rec.Shard = nr.id(), int32(shard)
		encodeAddr(unsafe.Slice((*byte)(unsafe.Pointer(&rec.Peer)), abi.SizeofSockaddr), peer, s.family)
		pos := atomic.LoadUint32(&r.sh.Rx_tail)
		nr.pending.Store(&ringSpot{ln: r, pos: pos, written: true, at: time.Now()})
		if w, err := r.rx.Write(unsafe.Slice((*byte)(unsafe.Pointer(&rec)), abi.AcceptRecSize)); err != nil || w != abi.AcceptRecSize {
			// Room was checked under this lock and only the shim's reads
			// change it: a broken index. The connection goes back.
			s.mu.Unlock()
			c.orphanPending(nr, s)
			if err != nil {
				s.mu.Lock()
				s.breakRefLocked(r, err)
				break
			}
			continue
		}
		r.ring = append(r.ring, nr)
		r.acceptor = true
		c.armSweep()
		c.d.stats.acceptRing.Add(1)
		c.countAccept(r.acceptCPU, shard, len(s.acceptQ.qs))
		if edge {
			c.published(r.slot, r.sh)
		}
		s.mu.Unlock()
	}
	s.refreshQueuedLocked()
	s.mu.Unlock()
}

// holdsRefLocked reports whether r is still one of s's references.
func (s *socket) holdsRefLocked(r *sockRef) bool {
	for _, x := range s.refs {
		if x == r {
			return true
		}
	}
	return false
}

// pruneRingLocked drops from r.ring the connections the shim has taken.
func (r *sockRef) pruneRingLocked() {
	i := 0
	for i < len(r.ring) && !r.ring[i].inRing() {
		r.ring[i].pending.Store(nil)
		i++
	}
	if i > 0 {
		r.ring = append(r.ring[:0], r.ring[i:]...)
	}
}

// takeLocked takes one connection for an accept, without blocking: an
// orphan first, then the daemon's own queue, then the backend's (kernel or
// netstack). cpu >= 0 is the caller's CPU (FSS_REQ_CPU).
func (s *socket) takeLocked(cpu int) (conn net.Conn, orphan *socket, shard int, ok bool) {
	if n := len(s.orphans); n > 0 {
		orphan = s.orphans[0]
		s.orphans = append(s.orphans[:0], s.orphans[1:]...)
		s.publishQuietLocked()
		return nil, orphan, orphan.shard, true
	}
	conn, shard, ok = s.acceptQ.pop(cpu)
	if !ok && s.direct != nil && s.ln != nil {
		c, err := s.directAcceptLocked()
		if err != nil {
			if e := errnoOf(err); e != syscall.EAGAIN {
				s.d.log.Debug("shim direct accept failed", "err", err)
			}
			return nil, nil, 0, false
		}
		conn, ok = c, true
	}
	if !ok && s.sdirect != nil && s.ln != nil {
		sc, err := s.stackAcceptLocked(cpu)
		if err != nil {
			if e := errnoOf(err); e != syscall.EAGAIN {
				s.d.log.Debug("shim direct accept failed", "err", err)
			}
			return nil, nil, 0, false
		}
		conn, shard, ok = sc, sc.Shard()%len(s.acceptQ.qs), true
	}
	if !ok {
		return nil, nil, 0, false
	}
	signal(s.space)
	s.publishQuietLocked()
	return conn, nil, shard, true
}

// giveBackLocked returns a connection an accept could not install (the
// client's table is full): it stays queued, as in the kernel.
func (s *socket) giveBackLocked(conn net.Conn, orphan *socket) {
	if orphan != nil {
		if s.dead {
			orphan.dropOrphan()
			return
		}
		s.orphans = append([]*socket{orphan}, s.orphans...)
		s.publishLocked()
		return
	}
	if s.dead {
		conn.Close()
		return
	}
	s.acceptQ.pushFront(conn)
	s.publishLocked()
}

// inheritedOptsLocked copies the listener's options for a connection it
// accepted (nil if it has none).
func (s *socket) inheritedOptsLocked() map[optKey][]byte {
	if len(s.opts) == 0 {
		return nil
	}
	opts := make(map[optKey][]byte, len(s.opts))
	for k, v := range s.opts {
		opts[k] = v
	}
	return opts
}

// adopt installs an accepted connection (a new conn, or an orphan socket)
// in c's table; spot, if not nil, marks it as waiting in an accept ring
// from before the slot is visible. It returns the reference and the peer.
func (c *client) adopt(ls *socket, conn net.Conn, orphan *socket, shard int, opts map[optKey][]byte, spot *ringSpot) (*sockRef, netip.AddrPort, syscall.Errno) {
	if orphan != nil {
		r, e := c.allocSlotWith(orphan, -1, 0, spot)
		if e != 0 {
			return nil, netip.AddrPort{}, e
		}
		orphan.mu.Lock()
		peer := addrPortOf(orphan.conn.RemoteAddr())
		orphan.holds-- // the orphan's hold: the new reference keeps it now
		orphan.mu.Unlock()
		return r, peer, 0
	}
	ns := newSocket(c.d)
	ns.opts, ns.family, ns.shard = opts, ls.family, shard
	r, e := c.allocSlotWith(ns, -1, 0, spot)
	if e != 0 {
		ns.abort()
		return nil, netip.AddrPort{}, e
	}
	ns.mu.Lock()
	ns.bound, ns.isBound = addrPortOf(conn.LocalAddr()), true
	ns.establishedLocked(conn)
	ns.mu.Unlock()
	return r, addrPortOf(conn.RemoteAddr()), 0
}

// countAccept counts an accept as local or stolen (Fastsocket's local
// listen table statistics).
func (c *client) countAccept(cpu, shard, shards int) {
	if cpu >= 0 && shard != cpu%shards {
		c.d.stats.acceptRemote.Add(1)
	} else {
		c.d.stats.acceptLocal.Add(1)
	}
}

// reclaimRing takes back the connections left untaken in listener
// reference r's ring (r's client closes the listener or is gone): they
// become orphans of the listener, for another holder. Client loop only.
func (c *client) reclaimRing(r *sockRef) {
	r.s.mu.Lock()
	ring := r.ring
	r.ring = nil
	r.s.mu.Unlock()
	for _, nr := range ring {
		c.orphanPending(nr, r.s)
	}
}

// orphanPending takes connection reference nr out of c's table and hands
// its socket to listener ls as an orphan, if the shim has not taken it.
// Client loop only (it detaches, and detach may use the loop's scratch).
func (c *client) orphanPending(nr *sockRef, ls *socket) {
	if !nr.claimBack() {
		return
	}
	c.mu.Lock()
	mine := c.slots[nr.slot] == nr
	c.mu.Unlock()
	if !mine {
		return // the shim closed an id it never took
	}
	ns := nr.s
	ns.mu.Lock()
	ns.holds++ // the orphan's hold, until a holder of the listener takes it
	ns.mu.Unlock()
	ns.detach(nr)
	c.freeSlot(nr)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.dead || ls.state != abi.StListening {
		ns.dropOrphan()
		return
	}
	ls.orphans = append(ls.orphans, ns)
	ls.d.stats.acceptReclaimed.Add(1)
	if r, limit := ls.ringTargetLocked(); r != nil && r.c != c {
		r.askFill(limit)
	}
	ls.publishLocked() // accept_pending counts orphans: an edge for every holder
}

// dropOrphan closes an orphan nobody will accept (its listener closed):
// with a reset, as the kernel resets the connections of a closed
// listener's queue.
func (s *socket) dropOrphan() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holds > 0 {
		s.holds--
	}
	s.linger0 = true
	s.maybeDieLocked()
}

// dropQueuedLocked resets every connection queued on the listener, in the
// daemon's own queue and its orphans, as the kernel resets a listener's
// queue when it stops listening.
func (s *socket) dropQueuedLocked() {
	s.acceptQ.drain()
	orphans := s.orphans
	s.orphans = nil
	for _, o := range orphans {
		o.dropOrphan()
	}
}

// refreshQueuedLocked publishes the backend queue's length as it is now.
func (s *socket) refreshQueuedLocked() {
	switch {
	case s.dead || s.state != abi.StListening:
	case s.sdirect != nil:
		s.updateKernelQueuedLocked(s.sdirect.Queued())
	case s.direct != nil:
		s.direct.Control(func(fd uintptr) { s.updateKernelQueuedLocked(kernelQueued(fd)) })
	default:
		s.publishLocked()
	}
}
