package stack

import (
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/fsstack/fsstack/afxdp"
)

// The receive path of one shard, run by one goroutine:
//
//	AF_XDP rx ring --Receive--> parseSegment --steer--> owner == me: netstack
//	     ^                                       \----> owner r:  HandoffRing(me->r), wake r
//	     +---- Release (fill ring) <----- frame copied into a netstack buffer
//	HandoffRing(r->me) --PopBatch--> netstack
//
// The goroutine spins briefly after work (busy-poll under load) and then
// sleeps on a channel. Two things wake it: a peer that handed it segments,
// and a watcher goroutine parked in Go's netpoller on the AF_XDP socket
// (readable = the rx ring has frames). Waiting in the netpoller rather
// than in a blocking poll(2) keeps the shard from pinning a Go P inside a
// system call, which stalled other goroutines for milliseconds until the
// runtime took the P back.

const (
	rxBatch      = 64
	handoffSize  = 4096
	spinDuration = 20 * time.Microsecond
	txRetryEvery = 200 * time.Microsecond
	sweepEvery   = time.Second
	sweepBudget  = 4096
	napMin       = time.Millisecond
)

// A sleeping shard is woken by the watcher goroutine parked in Go's
// netpoller on the AF_XDP socket, but it does not sleep on that alone.
// Under load the lab caught shards asleep for 200 ms with frames on their
// rx ring (the connections on that queue stalled until a tail-loss probe's
// retransmission made the client send again, which did wake the shard):
// the readiness notification had not reached it. So a shard that has just
// worked naps: it sleeps at most napMin, then twice as long after each nap
// that found nothing, up to sweepEvery. A lost notification then costs a
// millisecond instead of a retransmission timeout, and an idle shard
// still wakes about once a second (ten naps in its first idle second).
// Naps that found frames are counted (missed_wakeups).

// shard is one queue's slice of the stack.
type shard struct {
	id  int
	cpu int // the CPU run pins itself to; -1: none (Config.CPUs)
	log *slog.Logger
	// The send-buffer budget (sndbuf.go): new connections start with
	// sndMax while it lasts, else sndBase.
	sndBudget       *sendBudget
	sndBase, sndMax int64
	tid             atomic.Int32 // run's thread once pinned (for tests and stats)
	st              *gstack.Stack
	ep              *linkEndpoint
	sock            *afxdp.Socket
	steer           *steerer
	tw              timeWaitTable // TIME_WAIT after netstack's endpoint is gone (timewait.go)
	ephemeral       PortRange     // the stack's active-open ports (the table holds their 4-tuples a while)
	ctr             shardCounters
	// prune aborts half-open connections under a SYN flood (halfopen.go).
	prune halfOpenPruner
	// shed has the steering program drop new connections' SYNs while the
	// shard's receive frames run out (shed.go); nil where the kernel
	// cannot.
	shed    *afxdp.ShedGauge
	shedLog shedLog

	// in[r] carries segments from shard r to this shard (nil for r == id).
	in    []*HandoffRing[*gstack.PacketBuffer]
	peers []*shard

	wakeCh   chan struct{} // one token: wake the shard (peers, the rx watcher, Close)
	sleeping atomic.Bool   // set by this shard's goroutine before it waits on wakeCh
	// loopAt is when the goroutine last ended a pass (monoBase-relative
	// nanoseconds). A writer leaves its kick to the loop only while the
	// loop has come round recently: a loop that is runnable but not
	// running (a busy machine) must not hold frames back.
	loopAt  atomic.Int64
	closing atomic.Bool
	stopped chan struct{}
	rxFile  *os.File // a dup of the AF_XDP fd, registered with the netpoller

	connected atomic.Uint64 // active opens completed through DialContext

	afterSweep func() // shard 0: the stack's sweepDraining

	// gro merges a batch's in-order segments of one flow before netstack
	// sees them (shard goroutine only; on unless Config.NoGRO).
	gro   gro.GRO
	groOn bool

	rxDescs  []afxdp.Desc
	popBuf   []*gstack.PacketBuffer
	wakePeer []bool
}

// xskTx adapts the transmit half of an AF_XDP socket to txRing.
type xskTx struct {
	sock  *afxdp.Socket
	descs []afxdp.Desc
}

func (t *xskTx) reserve() ([]byte, uint64, bool) {
	d, buf, ok := t.sock.TxFrame()
	return buf, d.Addr, ok
}

func (t *xskTx) post(tokens []uint64, lens []uint32) int {
	t.descs = t.descs[:0]
	for i, tok := range tokens {
		t.descs = append(t.descs, afxdp.Desc{Addr: tok, Len: lens[i]})
	}
	return t.sock.Post(t.descs)
}

func (t *xskTx) kick() bool { return t.sock.KickTx() }

func (t *xskTx) checksum(token uint64, start, offset uint16) bool {
	return t.sock.SetTxChecksum(afxdp.Desc{Addr: token}, start, offset)
}

func (t *xskTx) pending() int { return t.sock.TxPending() }

func (t *xskTx) frame(token uint64, n uint32) []byte {
	return t.sock.Frame(afxdp.Desc{Addr: token, Len: n})
}

func (t *xskTx) cancel(tokens []uint64) {
	t.descs = t.descs[:0]
	for _, tok := range tokens {
		t.descs = append(t.descs, afxdp.Desc{Addr: tok})
	}
	t.sock.Discard(t.descs)
}

// monoBase anchors the monotonic timestamps of loopAt.
var monoBase = time.Now()

// loopFresh is how recently the shard loop must have come round for a
// writer to leave its kick to it. On a saturated machine the loop may wait
// a scheduling round between passes; frames that wait with it are what
// lets one kick carry many (the CPU saved is worth more than the wait:
// keep-alive p99 fell with it). A bound of 50 µs lost that gain; 2 ms
// keeps it and caps the wait where the loop is starved.
const loopFresh = 2 * time.Millisecond

// takesKicks reports whether the shard goroutine will kick soon for
// frames written now: it is awake and came round within loopFresh.
func (s *shard) takesKicks() bool {
	return !s.sleeping.Load() && time.Since(monoBase)-time.Duration(s.loopAt.Load()) < loopFresh
}

// run is the shard's receive loop. It returns when closing is set.
func (s *shard) run() {
	defer close(s.stopped)
	defer func() {
		// Writers kick for themselves once the loop is gone.
		s.sleeping.Store(true)
		s.ep.flushTx()
	}()
	if s.cpu >= 0 {
		// The goroutine keeps this thread to itself, and the thread ends
		// with it (no unlock), so the affinity never leaks to others.
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(s.cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			s.log.Warn("pin shard to its CPU", "shard", s.id, "cpu", s.cpu, "err", err)
		} else {
			s.tid.Store(int32(unix.Gettid()))
		}
	}
	timer := time.NewTimer(sweepEvery)
	defer timer.Stop()
	lastWork := time.Now()
	lastSweep := lastWork
	var ackDue int64 // earliest deadline of a held ACK (0: none known)
	nap := napMin
	napped := false // the last sleep ended on its timer
	for !s.closing.Load() {
		work := s.pollRx() + s.pollHandoffs()
		now := time.Now()
		if s.ep.heldAcks.Load() > 0 && (ackDue == 0 || now.UnixNano() >= ackDue) {
			ackDue = s.ep.postDueAcks(now.UnixNano(), false)
		}
		if d := s.tw.portDue.Load(); d != 0 && now.UnixNano() >= d {
			s.twPorts(now.UnixNano())
		}
		// One kick for every frame written since the last one, by
		// netstack answering what the pass delivered, by any other
		// goroutine (WritePackets leaves it to us while we are awake)
		// and the held ACKs that fell due.
		txLeft := !s.ep.flushTx()
		s.loopAt.Store(int64(now.Sub(monoBase)))
		if now.Sub(lastSweep) >= sweepEvery {
			s.sweep(now)
			if s.afterSweep != nil {
				s.afterSweep()
			}
			lastSweep = now
		}
		afterNap := napped
		napped = false
		if work > 0 {
			if afterNap {
				s.ctr.napFound.Add(1)
			}
			nap = napMin
			lastWork = now
			continue
		}
		if now.Sub(lastWork) < spinDuration {
			runtime.Gosched()
			continue
		}
		// Publish that we sleep, then look once more: a peer that pushed
		// before seeing the flag has left its segment where we look now.
		s.sleeping.Store(true)
		if s.pollRx()+s.pollHandoffs() > 0 || s.closing.Load() {
			s.sleeping.Store(false)
			lastWork = time.Now()
			continue
		}
		// Writers kick for themselves from here on; kick for what they
		// left to us before they could see that we sleep, and for the
		// held ACKs due by now. A writer that holds an ACK while we
		// sleep wakes us (onHold); one held before then sets the
		// deadline we sleep to.
		ackDue = s.ep.postDueAcks(time.Now().UnixNano(), false)
		if !s.ep.flushTx() {
			txLeft = true
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		sleepFor := nap
		if txLeft {
			// The kernel refused frames still on the ring: try again
			// soon even if nothing else wakes us.
			sleepFor = txRetryEvery
		}
		// Wake for a held ACK's deadline, and for an active open's
		// 4-tuple, which must be held soon after netstack lets it go
		// (twPorts).
		sleepAt := time.Now().UnixNano()
		for _, due := range [2]int64{ackDue, s.tw.portDue.Load()} {
			if due != 0 {
				sleepFor = min(sleepFor, max(time.Duration(due-sleepAt), time.Microsecond))
			}
		}
		timer.Reset(sleepFor)
		select {
		case <-s.wakeCh:
		case <-timer.C:
			napped = true
			if sleepFor == nap {
				nap = min(2*nap, sweepEvery)
			}
		}
		s.sleeping.Store(false)
		s.ctr.wakeups.Add(1)
		if !napped {
			// Woken for work: spin after it as after any. A nap that
			// finds nothing goes straight back to sleep.
			lastWork = time.Now()
		}
	}
}

// watchRx parks in the netpoller until the AF_XDP socket is readable and
// wakes the shard, until the socket's poll file is closed.
func (s *shard) watchRx() {
	rc, err := s.rxFile.SyscallConn()
	if err != nil {
		return
	}
	for !s.closing.Load() {
		waited := false
		err := rc.Read(func(uintptr) bool {
			if !waited {
				waited = true
				return false // wait for the next readiness event
			}
			return true
		})
		if err != nil {
			return
		}
		s.wake()
	}
}

// wake leaves a token for the shard goroutine.
func (s *shard) wake() {
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

// pollRx takes one batch from the AF_XDP rx ring.
func (s *shard) pollRx() int {
	n := s.sock.Receive(s.rxDescs)
	if n == 0 {
		if s.shed != nil {
			s.shed.Publish() // frames the kernel was counted for but dropped
		}
		return 0
	}
	if t := s.ep.taps.Load(); t != nil {
		for i := 0; i < n; i++ {
			t.tap(In, s.sock.Frame(s.rxDescs[i]))
		}
	}
	now := time.Now().UnixNano()
	grod := false
	if s.groOn {
		if b := s.ep.dispatcher.Load(); b != nil {
			s.gro.Dispatcher = b.d
			grod = true
		}
	}
	for i := 0; i < n; i++ {
		frame := s.sock.Frame(s.rxDescs[i])
		info, ok := parseSegment(frame)
		if !ok {
			// ICMP errors for our flows (path-MTU discovery) go to the
			// flow's owner like its segments.
			info, ok = parseICMPError(frame)
		}
		if !ok {
			s.ctr.rxMalformed.Add(1)
			continue
		}
		owner := s.steer.ownerOf(&info, now)
		// The owner's time-wait table sees the flow's FIN, SYN and RST
		// here, also those handed over (its lock and netstack's lookups
		// serve any goroutine).
		if info.flags&(tcpFlagFin|tcpFlagSyn|tcpFlagRst) != 0 && !s.peers[owner].timeWait(&info, frame, now) {
			continue // answered by the time-wait table, or dropped as TIME_WAIT drops it
		}
		pkt := gstack.NewPacketBuffer(gstack.PacketBufferOptions{
			Payload: buffer.MakeWithData(frame[info.ipStart : info.ipStart+info.ipLength]),
		})
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		if info.v6 {
			pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
		}
		if owner == s.id {
			if grod && !info.icmp {
				// Consecutive segments of one flow in this batch reach
				// netstack as one (flushed below, before we return).
				pkt.RXChecksumValidated = s.ep.caps&gstack.CapabilityRXChecksumOffload != 0
				s.gro.Enqueue(pkt)
			} else {
				s.ep.deliver(pkt)
			}
			pkt.DecRef()
			continue
		}
		if !s.peers[owner].in[s.id].Push(pkt) {
			s.ctr.handoffsFull.Add(1)
			pkt.DecRef()
			continue
		}
		s.ctr.handoffsOut.Add(1)
		s.wakePeer[owner] = true
	}
	if grod {
		s.gro.Flush()
	}
	s.sock.Release(s.rxDescs[:n])
	if s.shed != nil {
		s.shed.Publish()
	}
	s.ctr.rxPackets.Add(uint64(n))
	for q, w := range s.wakePeer {
		if w {
			s.wakePeer[q] = false
			s.peers[q].kick()
		}
	}
	return n
}

// kick wakes the shard if it sleeps. Called by peers.
func (s *shard) kick() {
	if s.sleeping.Load() {
		s.wake()
	}
}

// pollHandoffs delivers the segments other shards passed to this one.
func (s *shard) pollHandoffs() int {
	total := 0
	for r, ring := range s.in {
		if ring == nil || r == s.id {
			continue
		}
		for {
			n := ring.PopBatch(s.popBuf)
			for i := 0; i < n; i++ {
				s.ep.deliver(s.popBuf[i])
				s.popBuf[i].DecRef()
				s.popBuf[i] = nil
			}
			total += n
			if n < len(s.popBuf) {
				break
			}
		}
	}
	if total > 0 {
		s.ctr.handoffsIn.Add(uint64(total))
	}
	return total
}

// synsShed returns how many SYNs the steering program shed on the queue.
func (s *shard) synsShed() uint64 {
	if s.shed == nil {
		return 0
	}
	return s.shed.Shed()
}

// sweep forgets passive flows whose endpoint is gone.
func (s *shard) sweep(now time.Time) {
	s.shedLog.look(now, s.synsShed(), s.log, s.id)
	s.prune.prune(now.UnixNano(), s.st.Stats().TCP.ListenOverflowSynCookieSent.Value(), s.halfOpen)
	s.steer.sweep(now.UnixNano(), sweepBudget, s.flowNeedsClaim)
	s.tw.expire(now.UnixNano())
}

// halfOpen lists the shard's netstack endpoints in SYN-RCVD.
func (s *shard) halfOpen() []halfOpen {
	var hs []halfOpen
	for _, ep := range s.st.RegisteredEndpoints() {
		if e, ok := ep.(*tcp.Endpoint); ok && e.EndpointState() == tcp.StateSynRecv {
			hs = append(hs, e)
		}
	}
	return hs
}

// liveOn reports whether the shard's netstack has a connection on addr
// (any local address of addr's family when addr's is unspecified): an
// endpoint that is neither listening nor closed, TIME_WAIT included.
func (s *shard) liveOn(addr netip.AddrPort) bool {
	if s.tw.holdsPort(addr) {
		return true
	}
	wild := addr.Addr().IsUnspecified()
	want := tcpipAddr(addr.Addr())
	v4 := addr.Addr().Unmap().Is4()
	for _, ep := range s.st.RegisteredEndpoints() {
		e, ok := ep.(*tcp.Endpoint)
		if !ok {
			continue
		}
		switch e.EndpointState() {
		case tcp.StateListen, tcp.StateClose, tcp.StateError, tcp.StateInitial, tcp.StateBound:
			continue
		}
		info, ok := e.Info().(*gstack.TransportEndpointInfo)
		if !ok || info.ID.LocalPort != addr.Port() {
			continue
		}
		if wild && (info.ID.LocalAddress.Len() == 4) == v4 || info.ID.LocalAddress == want {
			return true
		}
	}
	return false
}

// flowNeedsClaim reports whether the shard's netstack has an endpoint for
// f that still needs its claim: one not in TIME_WAIT. A claim exists to
// hand over the segments of a connection that arrive on another queue; a
// TIME_WAIT endpoint only answers a retransmitted FIN or a new SYN, and
// the SYN brings its own claim (a new incarnation). Keeping such claims
// would fill the table under a legitimate short-connection load, where
// every connection sits in TIME_WAIT for the time-wait period.
func (s *shard) flowNeedsClaim(f flowKey) bool {
	ep := s.flowEndpoint(f)
	if ep == nil {
		return false
	}
	return ep.State() != uint32(tcp.StateTimeWait)
}

// endpointID is f as netstack's demuxer names it.
func (f flowKey) endpointID() (tcpip.NetworkProtocolNumber, gstack.TransportEndpointID) {
	id := gstack.TransportEndpointID{LocalPort: f.localPort, RemotePort: f.remotePort}
	if f.isV4() {
		id.LocalAddress = tcpip.AddrFrom4([4]byte(f.localAddr[12:]))
		id.RemoteAddress = tcpip.AddrFrom4([4]byte(f.remoteAddr[12:]))
		return header.IPv4ProtocolNumber, id
	}
	id.LocalAddress = tcpip.AddrFrom16(f.localAddr)
	id.RemoteAddress = tcpip.AddrFrom16(f.remoteAddr)
	return header.IPv6ProtocolNumber, id
}

// flowEndpoint returns the endpoint the shard's netstack has for exactly f
// (not a listener it would fall back to), or nil.
func (s *shard) flowEndpoint(f flowKey) tcpip.Endpoint {
	proto, id := f.endpointID()
	ep := s.st.FindTransportEndpoint(proto, header.TCPProtocolNumber, id, nicID)
	if ep == nil {
		return nil
	}
	e, ok := ep.(tcpip.Endpoint)
	if !ok {
		return nil
	}
	// FindTransportEndpoint falls back to a listener; only an exact
	// match is the flow's.
	if info, ok := e.Info().(*gstack.TransportEndpointInfo); ok && info.ID.RemotePort != f.remotePort {
		return nil
	}
	return e
}

func (s *shard) stats() ShardStats {
	tcp := s.st.Stats().TCP
	xs, _ := s.sock.Stats() // best effort: counters stay zero if the kernel refuses
	return ShardStats{
		XSKRxDropped:   xs.RxDropped,
		XSKRxRingFull:  xs.RxRingFull,
		XSKFillEmpty:   xs.RxFillRingEmptyDescs,
		XSKTxInvalid:   xs.TxInvalidDescs,
		Shard:          s.id,
		Queue:          s.sock.Queue(),
		CPU:            s.cpu,
		RxPackets:      s.ctr.rxPackets.Load(),
		TxPackets:      s.ctr.txPackets.Load(),
		RxDropped:      s.ctr.rxMalformed.Load() + s.ctr.handoffsFull.Load(),
		TxDropped:      s.ctr.txNoNeighbour.Load() + s.ctr.txNoFrame.Load() + s.ctr.txTooBig.Load(),
		Accepted:       tcp.PassiveConnectionOpenings.Value(),
		Connected:      s.connected.Load(),
		Handoffs:       s.ctr.handoffsOut.Load(),
		HandoffsIn:     s.ctr.handoffsIn.Load(),
		Open:           int64(tcp.CurrentEstablished.Value()),
		Resets:         tcp.ResetsSent.Value(),
		Retransmits:    tcp.Retransmits.Value(),
		Timeouts:       tcp.Timeouts.Value(),
		Wakeups:        s.ctr.wakeups.Load(),
		MissedWakeups:  s.ctr.napFound.Load(),
		TxWaits:        s.ctr.txFrameWaits.Load(),
		TxHeld:         s.ctr.txHeld.Load(),
		TxKicks:        xs.TxKicks,
		SynCookies:     tcp.ListenOverflowSynCookieSent.Value(),
		ListenDrops:    tcp.ListenOverflowSynDrop.Value() + tcp.ListenOverflowAckDrop.Value(),
		FlowsEvicted:   s.steer.evicted.Load(),
		FlowsUntracked: s.steer.untracked.Load(),
		HalfOpenPruned: s.prune.pruned.Load(),
		SynShed:        s.synsShed(),

		TimeWait:         s.tw.size.Load(),
		TimeWaitAcks:     s.tw.acks.Load(),
		TimeWaitOverflow: s.tw.overflow.Load(),
	}
}
