package stack

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/ports"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TIME_WAIT, kept small.
//
// A server that closes first keeps every connection in TIME_WAIT for the
// time-wait period (Config.TimeWait). netstack keeps the whole endpoint
// for it, about 4 KiB of heap each: at 13,000 connections a second and
// 5 s, 240 MiB live that the collector marks again in every cycle, twice
// that in heap. Linux keeps a small time-wait socket instead. So does
// fsstack: netstack's own TIME_WAIT lasts at most netstackTimeWait, and
// the shard keeps the rest of the period in its time-wait table, about a
// hundred bytes a connection and nothing for the collector to chase:
//
//	peer's FIN arrives, netstack's endpoint closing (we closed first)
//	    --> recorded: our next sequence number (the FIN's ack), the
//	        peer's FIN's end, our timestamp as the peer echoes it
//	netstack's endpoint still there --> it answers everything, as before
//	netstack's endpoint gone (after netstackTimeWait), table entry live:
//	    the recorded FIN again (the peer did not get our last ACK)
//	        --> the table sends that ACK again, built from the FIN, and
//	        restarts the period; another FIN goes to netstack
//	    SYN with a higher sequence number (a new incarnation)
//	        --> entry dropped, the SYN goes to the listener
//	    other SYN, RST, a FIN without ACK --> dropped (RFC 1337)
//	an active open's entry (local port in the ephemeral range), once
//	netstack's endpoint is gone --> its 4-tuple held in netstack's port
//	    manager until a second after the peer's FIN, as netstack's own
//	    TIME_WAIT reuse rule would (activeReuseAfter), then given back
//	period over --> entry dropped (the shard's once-a-second sweep)
//
// These are netstack's own TIME_WAIT rules for those segments. Segments
// without FIN, SYN or RST are not looked up (a lookup per segment would
// cost every connection): a stray ACK or data segment of a connection
// whose endpoint is gone is answered with a reset by netstack, where its
// TIME_WAIT would have answered with an ACK or dropped it. The
// connection's owner shard keeps its entry; a shard that receives a
// segment for another looks in the owner's table before handing it over
// (on veth an active open's segments arrive on any queue).

// netstackTimeWait bounds netstack's own TIME_WAIT (the table keeps the
// rest of Config.TimeWait).
const netstackTimeWait = 200 * time.Millisecond

// activeReuseAfter is how long after the peer's FIN an active open's
// ports stay out of new active opens: netstack lets a dial reuse a
// TIME_WAIT connection's 4-tuple once its last timestamp is a second old
// (TCPTimeWaitReuseGlobal), and the table keeps that rule once netstack's
// endpoint is gone by holding the 4-tuple in netstack's port manager
// (ReserveTuple) until then. Without it a proxy would reuse a backend
// tuple 200 ms after closing it.
const activeReuseAfter = time.Second

// portRetry is how soon the table looks again at an active open's entry
// whose netstack endpoint is still there (its TIME_WAIT restarted).
const portRetry = 50 * time.Millisecond

// timeWaitMax bounds one shard's table. Linux's default bound
// (tcp_max_tw_buckets) is 262,144 for a host; past it a connection closes
// without the rest of its TIME_WAIT (counted: TimeWaitOverflow).
const timeWaitMax = 1 << 16

// timeWaitWindow is the raw window field of the table's ACKs: the
// connection is over and the peer sends nothing more, but a zero window
// would set the peer probing.
const timeWaitWindow = 1024

// twEntry is one connection in the table.
type twEntry struct {
	sndNxt  uint32 // our next sequence number (after our FIN)
	rcvNxt  uint32 // the peer's FIN's end: what our ACK acknowledges
	tsOurs  uint32 // our timestamp clock as the peer last echoed it
	ts      bool   // the connection uses timestamps
	at      int64  // when tsOurs was read (UnixNano)
	expires int64
	// active marks an active open's connection (its local port is in
	// the stack's ephemeral range): its 4-tuple is held from new dials
	// until at + activeReuseAfter; reserved says the table holds it.
	active, reserved bool
}

type twPortEvent struct {
	flow flowKey
	due  int64
}

type twExpiry struct {
	flow    flowKey
	expires int64
}

// timeWaitTable is one shard's table. Every shard's receive goroutine
// records and looks up (for the segments it hands over to the owner, as
// for its own), the owner's alone holds and releases ports (twPorts, the
// sweep), and the stack's draining sweep asks holdsPort from shard 0's
// goroutine: hence the lock, taken for FIN, SYN and RST segments only.
type timeWaitTable struct {
	mu     sync.Mutex
	period time.Duration // 0: off (netstack keeps the whole period)
	limit  int
	m      map[flowKey]twEntry
	// queue lists entries in the order their periods end (every period
	// is the same length); a restarted entry is queued again and its
	// older element skipped (expires differs).
	queue []twExpiry
	head  int

	// portQ lists when to look at active opens' entries: reserve their
	// 4-tuple once netstack's endpoint is gone, release it at
	// at + activeReuseAfter (shard.twPorts). portDue is its head's due
	// time (0: empty), for the shard loop's look without the lock.
	portQ    []twPortEvent
	portHead int
	portDue  atomic.Int64
	// release gives a held 4-tuple back to netstack's port manager
	// (called without mu).
	release func(flowKey)

	acks     atomic.Uint64 // ACKs the table sent
	overflow atomic.Uint64 // connections not recorded: the table was full
	size     atomic.Int64
}

func (t *timeWaitTable) init(period time.Duration, limit int) {
	t.period, t.limit = period, limit
	t.m = make(map[flowKey]twEntry)
}

func (t *timeWaitTable) lookup(f flowKey) (twEntry, bool) {
	if t.size.Load() == 0 {
		return twEntry{}, false
	}
	t.mu.Lock()
	e, ok := t.m[f]
	t.mu.Unlock()
	return e, ok
}

// put records or replaces f's entry; restart starts its period again.
func (t *timeWaitTable) put(f flowKey, e twEntry, now int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.m[f]; !ok && len(t.m) >= t.limit {
		t.overflow.Add(1)
		return false
	}
	e.expires = now + int64(t.period)
	if old, ok := t.m[f]; ok {
		e.reserved = old.reserved
	}
	t.m[f] = e
	if e.active {
		t.queuePortLocked(f, now+int64(netstackTimeWait)+int64(portRetry))
	}
	if t.head > 0 && t.head >= len(t.queue)/2 {
		n := copy(t.queue, t.queue[t.head:])
		t.queue, t.head = t.queue[:n], 0
	}
	t.queue = append(t.queue, twExpiry{flow: f, expires: e.expires})
	t.size.Store(int64(len(t.m)))
	return true
}

func (t *timeWaitTable) forget(f flowKey) {
	t.mu.Lock()
	e, ok := t.m[f]
	delete(t.m, f)
	t.size.Store(int64(len(t.m)))
	t.mu.Unlock()
	if ok && e.reserved && t.release != nil {
		t.release(f)
	}
}

// expire drops the entries whose period is over.
func (t *timeWaitTable) expire(now int64) {
	var held []flowKey
	t.mu.Lock()
	for t.head < len(t.queue) {
		q := t.queue[t.head]
		if q.expires > now {
			break
		}
		if e, ok := t.m[q.flow]; ok && e.expires == q.expires {
			delete(t.m, q.flow)
			if e.reserved {
				held = append(held, q.flow)
			}
		}
		t.head++
	}
	if t.head == len(t.queue) {
		t.queue, t.head = t.queue[:0], 0
	}
	t.size.Store(int64(len(t.m)))
	t.mu.Unlock()
	if t.release != nil {
		for _, f := range held {
			t.release(f)
		}
	}
}

// queuePortLocked queues a look at f's ports at due (portQ's times only
// grow: every entry waits the same delays).
func (t *timeWaitTable) queuePortLocked(f flowKey, due int64) {
	if t.portHead > 0 && t.portHead >= len(t.portQ)/2 {
		n := copy(t.portQ, t.portQ[t.portHead:])
		t.portQ, t.portHead = t.portQ[:n], 0
	}
	if n := len(t.portQ); n > t.portHead && t.portQ[n-1].due > due {
		due = t.portQ[n-1].due // keep the queue in order; a little late is fine
	}
	t.portQ = append(t.portQ, twPortEvent{flow: f, due: due})
	t.portDue.Store(t.portQ[t.portHead].due)
}

// nextPort pops the first port look due by now: f's entry as it is now
// (found false if it is gone).
func (t *timeWaitTable) nextPort(now int64) (f flowKey, e twEntry, found, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.portHead == len(t.portQ) || t.portQ[t.portHead].due > now {
		return f, e, false, false
	}
	f = t.portQ[t.portHead].flow
	t.portHead++
	if t.portHead == len(t.portQ) {
		t.portQ, t.portHead = t.portQ[:0], 0
		t.portDue.Store(0)
	} else {
		t.portDue.Store(t.portQ[t.portHead].due)
	}
	e, found = t.m[f]
	return f, e, found, true
}

// setReserved records whether the table holds f's 4-tuple, and queues the
// next look at it (due; 0: none). It reports false when f's entry is gone
// (another shard's goroutine forgot it meanwhile: a new incarnation); a
// caller that has just reserved the tuple then gives it back.
func (t *timeWaitTable) setReserved(f flowKey, reserved bool, due int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[f]
	if !ok {
		return false
	}
	e.reserved = reserved
	t.m[f] = e
	if due != 0 {
		t.queuePortLocked(f, due)
	}
	return true
}

// takeReserved clears f's reserved mark and reports whether it was set:
// the one caller that sees true gives the tuple back (forget and expire,
// which may run on another shard's goroutine, decide under the same lock).
func (t *timeWaitTable) takeReserved(f flowKey) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[f]
	if !ok || !e.reserved {
		return false
	}
	e.reserved = false
	t.m[f] = e
	return true
}

// twPorts holds active opens' 4-tuples from new dials once netstack has
// let their endpoints go, and gives them back activeReuseAfter after the
// peer's FIN (shard goroutine).
func (s *shard) twPorts(now int64) {
	t := &s.tw
	for {
		f, e, found, ok := t.nextPort(now)
		if !ok {
			return
		}
		if !found || !e.active {
			continue
		}
		reuseAt := e.at + int64(activeReuseAfter)
		switch {
		case e.reserved && now >= reuseAt:
			if t.takeReserved(f) {
				s.st.ReleasePort(s.tupleReservation(f))
			}
		case e.reserved:
			t.setReserved(f, true, reuseAt)
		case now >= reuseAt:
			// Its ports may be reused already.
		default:
			if _, alive := s.flowState(f); alive {
				t.setReserved(f, false, now+int64(portRetry))
			} else if s.st.ReserveTuple(s.tupleReservation(f)) && !t.setReserved(f, true, reuseAt) {
				s.st.ReleasePort(s.tupleReservation(f))
			}
			// Else a new connection holds the tuple already.
		}
	}
}

// tupleReservation names f's 4-tuple in netstack's port manager.
func (s *shard) tupleReservation(f flowKey) ports.Reservation {
	proto, id := f.endpointID()
	return ports.Reservation{
		Networks:  []tcpip.NetworkProtocolNumber{proto},
		Transport: tcp.ProtocolNumber,
		Addr:      id.LocalAddress,
		Port:      id.LocalPort,
		Dest:      tcpip.FullAddress{Addr: id.RemoteAddress, Port: id.RemotePort},
	}
}

// holdsPort reports whether an entry is a connection on addr (any local
// address of addr's family when addr's is unspecified).
func (t *timeWaitTable) holdsPort(addr netip.AddrPort) bool {
	if t.size.Load() == 0 {
		return false
	}
	var want [16]byte
	a := addr.Addr()
	wild := a.IsUnspecified()
	if a.Unmap().Is4() {
		put4(&want, a.Unmap().AsSlice())
	} else {
		want = a.As16()
	}
	v4 := a.Unmap().Is4()
	t.mu.Lock()
	defer t.mu.Unlock()
	for f := range t.m {
		if f.localPort != addr.Port() {
			continue
		}
		if wild && f.isV4() == v4 || f.localAddr == want {
			return true
		}
	}
	return false
}

// closingState reports whether an endpoint in state st has sent its FIN
// (or is about to answer the peer's with TIME_WAIT): a FIN from the peer
// now leads to TIME_WAIT on this side.
func closingState(st tcp.EndpointState) bool {
	switch st {
	case tcp.StateFinWait1, tcp.StateFinWait2, tcp.StateClosing, tcp.StateTimeWait:
		return true
	}
	return false
}

// flowState returns the state of the endpoint netstack has for exactly f;
// ok is false when it has none (a listener for f's port does not count).
func (s *shard) flowState(f flowKey) (st tcp.EndpointState, ok bool) {
	proto, id := f.endpointID()
	e, isTCP := s.st.FindTransportEndpoint(proto, header.TCPProtocolNumber, id, nicID).(*tcp.Endpoint)
	if !isTCP {
		return 0, false
	}
	switch st = e.EndpointState(); st {
	case tcp.StateListen, tcp.StateInitial, tcp.StateBound, tcp.StateClose, tcp.StateError:
		// A listener found for f's port, or an endpoint not (or no
		// longer) connected.
		return st, false
	}
	return st, true
}

// timeWait looks at a received segment with FIN, SYN or RST for the
// shard's time-wait table, recording a connection entering TIME_WAIT and
// answering for one netstack has let go. It reports whether the segment
// still goes to netstack.
func (s *shard) timeWait(info *segmentInfo, frame []byte, now int64) bool {
	t := &s.tw
	if t.period <= 0 || info.icmp {
		return true
	}
	isFin := info.flags&(tcpFlagFin|tcpFlagSyn|tcpFlagRst) == tcpFlagFin
	ent, found := t.lookup(info.flow)
	if !found && !isFin {
		return true
	}
	if info.flags&(tcpFlagSyn|tcpFlagAck) == tcpFlagSyn && found && seqAfter(info.seq, ent.rcvNxt) {
		// A new incarnation: netstack's TIME_WAIT (if it is still there)
		// or the listener takes it.
		t.forget(info.flow)
		return true
	}
	st, alive := s.flowState(info.flow)
	if alive {
		if isFin {
			if closingState(st) {
				s.recordTimeWait(info, frame, now)
			} else if found {
				t.forget(info.flow) // a new incarnation the peer closes
			}
		}
		return true
	}
	if !found {
		return true // no connection at all: netstack resets
	}
	// netstack has let go: the table answers as its TIME_WAIT would.
	if !isFin || info.flags&tcpFlagAck == 0 {
		return false // a RST (RFC 1337), an old SYN, a FIN without ACK
	}
	if info.seq+info.payloadLen()+1 != ent.rcvNxt {
		// Not the FIN the table acknowledged: an old duplicate, or a
		// connection the table does not know as it is. Only netstack
		// may acknowledge data, so it answers (a reset, without an
		// endpoint).
		return true
	}
	if s.ep.sendTimeWaitAck(frame, info, ent, now) {
		t.acks.Add(1)
	}
	// The peer did not get our last ACK: wait the period again.
	ent.tsOurs, ent.at = ourTimestamp(ent, now), now
	t.put(info.flow, ent, now)
	return false
}

// recordTimeWait records (or renews) the connection whose FIN info is,
// netstack's endpoint being in a closing state.
func (s *shard) recordTimeWait(info *segmentInfo, frame []byte, now int64) {
	if info.flags&tcpFlagAck == 0 {
		return
	}
	e := twEntry{sndNxt: info.ack, rcvNxt: info.seq + info.payloadLen() + 1, at: now,
		active: info.flow.localPort >= s.ephemeral.First && info.flow.localPort <= s.ephemeral.Last}
	if o, ok := segmentOptions(info, frame); ok && o.TS {
		e.ts, e.tsOurs = true, o.TSEcr
	}
	s.tw.put(info.flow, e, now)
}

// ourTimestamp is our timestamp clock now, from what the peer last
// echoed: at least that (the peer's PAWS check), moving in milliseconds
// as netstack's does.
func ourTimestamp(e twEntry, now int64) uint32 {
	return e.tsOurs + uint32(max(now-e.at, 0)/int64(time.Millisecond))
}

// payloadLen is the segment's TCP payload length.
func (info *segmentInfo) payloadLen() uint32 {
	return uint32(info.ipStart + info.ipLength - info.tcpStart - info.tcpLen)
}

// segmentOptions parses the TCP options of the segment in frame.
func segmentOptions(info *segmentInfo, frame []byte) (header.TCPOptions, bool) {
	if info.tcpLen <= tcpMinHeader {
		return header.TCPOptions{}, false
	}
	return header.ParseTCPOptions(frame[info.tcpStart+tcpMinHeader : info.tcpStart+info.tcpLen]), true
}

func seqAfter(a, b uint32) bool { return int32(a-b) > 0 }

// sendTimeWaitAck sends the ACK a TIME_WAIT connection owes the segment
// in frame (a FIN of the peer's): addresses and ports swapped, our next
// sequence number, the peer's FIN's end acknowledged, timestamps if the
// connection has them. Any shard's receive goroutine (the link
// endpoint's txMu serializes it with the owner's writers). A frame that
// finds no room is not sent: the peer sends its FIN again.
func (e *linkEndpoint) sendTimeWaitAck(in []byte, info *segmentInfo, ent twEntry, now int64) bool {
	var tsVal, tsEcr uint32
	if ent.ts {
		o, ok := segmentOptions(info, in)
		if !ok || !o.TS {
			return false // RFC 7323: a timestamps connection's segment without them is dropped
		}
		tsVal, tsEcr = ourTimestamp(ent, now), o.TSVal
	}
	seq := ent.sndNxt
	if seqAfter(info.ack, seq) {
		seq = info.ack
	}
	tcpLen := tcpMinHeader
	if ent.ts {
		tcpLen += 12 // NOP, NOP, timestamps
	}
	ipLen := ipv4MinHeader
	if info.v6 {
		ipLen = ipv6HeaderLen
	}
	n := ethHeaderLen + ipLen + tcpLen

	e.txMu.Lock()
	e.tokens, e.lens = e.tokens[:0], e.lens[:0]
	buf, token, ok := e.tx.reserve()
	if ok && len(buf) < n {
		e.tx.cancel([]uint64{token})
		ok = false
	}
	if ok {
		f := buf[:n]
		copy(f[0:6], in[6:12]) // back to whoever sent it
		copy(f[6:12], in[0:6])
		copy(f[12:14], in[12:14])
		ip := f[ethHeaderLen : ethHeaderLen+ipLen]
		inIP := in[info.ipStart:]
		var src, dst tcpip.Address
		if info.v6 {
			in6 := header.IPv6(inIP)
			src, dst = in6.DestinationAddress(), in6.SourceAddress()
			header.IPv6(ip).Encode(&header.IPv6Fields{PayloadLength: uint16(tcpLen),
				TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
		} else {
			in4 := header.IPv4(inIP)
			src, dst = in4.DestinationAddress(), in4.SourceAddress()
			h := header.IPv4(ip)
			h.Encode(&header.IPv4Fields{TotalLength: uint16(ipLen + tcpLen), Flags: header.IPv4FlagDontFragment,
				TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
			h.SetChecksum(ipv4HeaderChecksum(ip))
		}
		th := header.TCP(f[ethHeaderLen+ipLen:])
		clear(th)
		th.Encode(&header.TCPFields{
			SrcPort:    info.flow.localPort,
			DstPort:    info.flow.remotePort,
			SeqNum:     seq,
			AckNum:     ent.rcvNxt,
			DataOffset: uint8(tcpLen),
			Flags:      header.TCPFlagAck,
			WindowSize: timeWaitWindow,
		})
		if ent.ts {
			o := th[tcpMinHeader:]
			o[0], o[1], o[2], o[3] = 1, 1, 8, 10 // NOP, NOP, kind 8, length 10
			binary.BigEndian.PutUint32(o[4:8], tsVal)
			binary.BigEndian.PutUint32(o[8:12], tsEcr)
		}
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen))
		th.SetChecksum(^checksum.Checksum(th, xsum))
		e.appendLocked(token, uint32(n))
		e.postLocked()
	}
	e.txMu.Unlock()
	e.flushTx()
	return ok
}
