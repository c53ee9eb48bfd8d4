package stack

import (
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// txRing is the transmit half of a shard's AF_XDP socket, as the link
// endpoint sees it. reserve hands out a free frame; post publishes reserved
// frames with their lengths without waking the kernel; kick wakes it for
// everything posted so far. reserve, post and cancel are serialized by the
// caller (the link endpoint's txMu); kick may run beside them, one kick at
// a time (the link endpoint's kicking flag).
type txRing interface {
	reserve() (buf []byte, token uint64, ok bool)
	post(tokens []uint64, lens []uint32) int
	// cancel returns reserved but unsent frames.
	cancel(tokens []uint64)
	// kick returns false when frames stay on the ring (the kernel kept
	// refusing): kick again later.
	kick() bool
	// pending returns how many posted frames the kernel has not taken.
	pending() int
	// frame returns the bytes of a reserved or posted frame, n long
	// (for a capture; valid while the caller holds txMu).
	frame(token uint64, n uint32) []byte
	// checksum asks the kernel (or the NIC) to complete the checksum of a
	// reserved frame from byte start and store it at start+offset, where
	// the frame holds the pseudo-header sum. It returns false, asking
	// nothing, where the ring cannot (the caller then sums).
	checksum(token uint64, start, offset uint16) bool
}

// linkEndpoint adapts one shard's AF_XDP queue to its gVisor stack. It is
// an L3 endpoint: the shard's receive loop strips the Ethernet header
// before delivery, and WritePackets adds one using the kernel's neighbour
// table, so netstack never speaks ARP (the kernel keeps the control plane).
//
// Transmit, one pass per WritePackets call (any netstack goroutine):
//
//	netstack segment (up to 64 KiB with GSO) --txMu--> cut into MSS frames,
//	  headers and checksums written straight into UMEM --post--> tx ring
//	  --> txPending --> kick: by the shard goroutine once at the end of a
//	      receive pass for every frame written since its last kick, by
//	      any goroutine, while it is awake (a pass, or the spin between
//	      passes); else, the shard asleep, by the writer at once;
//	      a writer that finds another goroutine in sendto leaves its frames
//	      to that goroutine's next kick (flushTx)
//
// Threading: deliver is called by the shard goroutine only; WritePackets is
// called by any netstack goroutine and serializes on txMu; flushTx by any
// goroutine, one kick at a time.
type linkEndpoint struct {
	mtu   uint32
	mac   tcpip.LinkAddress
	caps  stack.LinkEndpointCapabilities
	neigh *neighbourTable
	ctr   *shardCounters
	gso   bool // netstack hands segments of up to gsoMaxSize; WritePackets cuts them

	dispatcher atomic.Pointer[dispatcherBox]
	// taps lists the captures that want this shard's frames; nil while
	// none runs (capture.go). Written by Stack.Capture and Capture.Close
	// under the stack's mu; read by the receive and transmit paths.
	taps atomic.Pointer[tapList]

	txMu   sync.Mutex // guards tx's reserve/post/cancel, tokens, lens
	tx     txRing
	tokens []uint64
	lens   []uint32

	// txPending is set after frames are posted and cleared by the
	// goroutine that kicks for them. kicking is held by that goroutine.
	txPending atomic.Bool
	kicking   atomic.Bool
	// acks holds pure ACKs waiting for a segment to carry them (ackhold.go);
	// guarded by txMu. heldAcks mirrors len(acks.byFlow) for lock-free
	// looks by the shard loop.
	acks     ackHolder
	heldAcks atomic.Int32
	// onHold, if set, is called (without txMu) when an ACK is held while
	// none was: the shard loop must wake to send it at its deadline.
	onHold func()

	// shardAwake, if set, reports that the shard goroutine is awake (in a
	// receive pass or spinning between passes) and will call flushTx when
	// its pass ends; the writer then leaves the kick to it. The shard
	// publishes that it sleeps before its last flushTx, and a writer
	// publishes txPending before it looks, so one of the two kicks.
	shardAwake func() bool

	// held counts HoldTx holders: while it is above zero, writers leave
	// their kicks to the holder's release (up to txDeferMax frames).
	held atomic.Int32

	// unres holds packets whose next hop is being resolved.
	unres unresolved

	// dropTx, if set (tests), drops the frames it returns true for.
	dropTx func(frame []byte) bool

	onClose  func()
	closeMu  sync.Mutex
	isClosed bool
}

type dispatcherBox struct{ d stack.NetworkDispatcher }

var _ stack.LinkEndpoint = (*linkEndpoint)(nil)

func newLinkEndpoint(mtu uint32, mac tcpip.LinkAddress, rxChecksumOffload bool, tx txRing, neigh *neighbourTable, ctr *shardCounters) *linkEndpoint {
	e := &linkEndpoint{mtu: mtu, mac: mac, tx: tx, neigh: neigh, ctr: ctr}
	if rxChecksumOffload {
		e.caps |= stack.CapabilityRXChecksumOffload
	}
	return e
}

func (e *linkEndpoint) MTU() uint32                           { return e.mtu }
func (e *linkEndpoint) SetMTU(mtu uint32)                     { e.mtu = mtu }
func (e *linkEndpoint) MaxHeaderLength() uint16               { return ethHeaderLen }
func (e *linkEndpoint) LinkAddress() tcpip.LinkAddress        { return e.mac }
func (e *linkEndpoint) SetLinkAddress(addr tcpip.LinkAddress) { e.mac = addr }
func (e *linkEndpoint) Capabilities() stack.LinkEndpointCapabilities {
	return e.caps
}
func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
		return
	}
	e.dispatcher.Store(&dispatcherBox{d})
}
func (e *linkEndpoint) IsAttached() bool                        { return e.dispatcher.Load() != nil }
func (e *linkEndpoint) Wait()                                   {}
func (e *linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (e *linkEndpoint) AddHeader(*stack.PacketBuffer)           {}
func (e *linkEndpoint) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (e *linkEndpoint) SetOnCloseAction(f func())               { e.onClose = f }
func (e *linkEndpoint) Close() {
	e.stopUnresolved()
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.isClosed {
		return
	}
	e.isClosed = true
	if e.onClose != nil {
		e.onClose()
	}
}

// deliver hands an inbound IP packet to netstack: IPv6 when the receive
// path marked it so (pkt.NetworkProtocolNumber), else IPv4. Shard
// goroutine only.
func (e *linkEndpoint) deliver(pkt *stack.PacketBuffer) {
	if b := e.dispatcher.Load(); b != nil {
		proto := pkt.NetworkProtocolNumber
		if proto != header.IPv6ProtocolNumber {
			proto = header.IPv4ProtocolNumber
		}
		b.d.DeliverNetworkPacket(proto, pkt)
	}
}

// txDeferMax is how many frames may wait on the tx ring for the shard
// loop's kick; a writer that leaves more kicks at once, so a bulk sender
// never runs out of frames waiting for a pass.
const txDeferMax = 64

// gsoMaxSize is the largest segment netstack hands WritePackets when GSO
// is on: an IPv4 total length must fit 16 bits.
const gsoMaxSize = 65535

// GSOMaxSize implements stack.GSOEndpoint.
func (e *linkEndpoint) GSOMaxSize() uint32 {
	if !e.gso {
		return 0
	}
	return gsoMaxSize
}

// SupportedGSO implements stack.GSOEndpoint: with GSO on, netstack builds
// segments of up to 64 KiB with a partial checksum ("host" GSO), and
// WritePackets cuts them into MSS-sized frames, as a NIC's TSO would.
func (e *linkEndpoint) SupportedGSO() stack.SupportedGSO {
	if !e.gso {
		return stack.GSONotSupported
	}
	return stack.HostGSOSupported
}

var _ stack.GSOEndpoint = (*linkEndpoint)(nil)

// WritePackets frames each packet with an Ethernet header and posts it on
// the shard's AF_XDP transmit ring, cutting GSO segments into MSS-sized
// frames, then sees that the kernel is kicked (flushTx). A packet whose
// next hop has no known link address starts resolution in the kernel and
// is held until it resolves (unresolved.go).
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.txMu.Lock()
	e.tokens = e.tokens[:0]
	e.lens = e.lens[:0]
	e.acks.newHold = false
	sent := 0
	all := pkts.AsSlice()
	for i, pkt := range all {
		hop := pkt.EgressRoute.NextHop
		if hop.BitLen() == 0 {
			hop = pkt.EgressRoute.RemoteAddress
		}
		dst, ok := e.neigh.lookup(hop)
		if !ok {
			e.neigh.resolve(hop)
			if e.holdUnresolved(hop, pkt) {
				sent++ // sent once hop resolves (unresolved.go)
			} else {
				e.ctr.txNoNeighbour.Add(1)
			}
			continue
		}
		var full bool
		if pkt.GSOOptions.Type != stack.GSONone {
			ok, full = e.writeSegmentsLocked(pkt, dst)
		} else {
			ok, full = e.writeFrameLocked(pkt, dst)
		}
		if full {
			e.ctr.txNoFrame.Add(uint64(len(all) - i)) // this packet and the rest of the batch
			break
		}
		if ok {
			sent++
		}
	}
	if len(e.tokens) > 0 {
		e.postLocked()
	}
	backlog := e.tx.pending()
	newHold := e.acks.newHold
	e.txMu.Unlock()
	if newHold && e.onHold != nil {
		e.onHold()
	}
	if backlog >= txDeferMax || e.held.Load() == 0 && (e.shardAwake == nil || !e.shardAwake()) {
		e.flushTx()
	}
	if sent == 0 && pkts.Len() > 0 {
		// Nothing left the host; report it as a full queue so callers
		// retry later rather than treating the route as dead.
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return sent, nil
}

// postLocked posts the batch's frames (tokens, lens). When the tx ring has
// no room it kicks the kernel and waits for room up to txFrameWait, as
// reserveLocked waits for a frame: the kernel publishes that it took ring
// entries only at the end of a sendto, after it may already have completed
// their frames (which are then free here while the ring still looks
// full), and a frame dropped here costs the flow a retransmission. Only
// what still finds no room is given back, counted as dropped. It returns
// how many were posted.
func (e *linkEndpoint) postLocked() int {
	posted := e.tx.post(e.tokens, e.lens)
	if posted < len(e.tokens) {
		kick := func() {
			e.txPending.Store(true)
			e.flushTx()
		}
		kick()
		e.waitTxLocked(func() bool {
			posted += e.tx.post(e.tokens[posted:], e.lens[posted:])
			if posted < len(e.tokens) {
				kick()
				return false
			}
			return true
		})
		if posted < len(e.tokens) {
			e.tx.cancel(e.tokens[posted:])
			e.ctr.txNoFrame.Add(uint64(len(e.tokens) - posted))
		}
	}
	if t := e.taps.Load(); t != nil {
		e.tapPostedLocked(t, posted)
	}
	e.ctr.txPackets.Add(uint64(posted))
	e.txPending.Store(true)
	return posted
}

// tapPostedLocked shows the first posted frames of the batch to the
// captures in t. Called with txMu held, so no frame has been reused yet.
func (e *linkEndpoint) tapPostedLocked(t *tapList, posted int) {
	for i := 0; i < posted; i++ {
		if f := e.tx.frame(e.tokens[i], e.lens[i]); f != nil {
			t.tap(Out, f)
		}
	}
}

// flushTx kicks the kernel for every frame posted so far, unless another
// goroutine is kicking: that one looks at txPending again when it is done,
// so frames posted during its sendto leave with the next one. It returns
// false when frames stayed on the ring; txPending is then set again.
func (e *linkEndpoint) flushTx() bool {
	for e.txPending.Load() {
		if !e.kicking.CompareAndSwap(false, true) {
			return true
		}
		e.txPending.Store(false)
		drained := e.tx.kick()
		if !drained {
			e.txPending.Store(true)
		}
		e.kicking.Store(false)
		if !drained {
			return false
		}
	}
	return true
}

// txFrameWait bounds how long a writer waits for a free tx frame. Frames
// come back when the kernel frees what it sent, and over veth it frees a
// frame only once the peer's stack has taken the data (its input backlog
// can hold thousands), so a burst of GSO segments can briefly find none
// free; waiting here is backpressure, where dropping would cost a
// retransmission timeout.
const txFrameWait = 2 * time.Millisecond

// reserveLocked returns a free tx frame, waiting up to txFrameWait for
// the kernel to complete some.
func (e *linkEndpoint) reserveLocked() ([]byte, uint64, bool) {
	buf, token, ok := e.tx.reserve()
	if !ok {
		e.waitTxLocked(func() bool {
			buf, token, ok = e.tx.reserve()
			return ok
		})
	}
	return buf, token, ok
}

// waitTxLocked is the transmit path's backpressure: it yields and calls
// try until try succeeds or txFrameWait has passed, and reports whether
// try succeeded. Each call counts one wait (TxWaits).
func (e *linkEndpoint) waitTxLocked(try func() bool) bool {
	e.ctr.txFrameWaits.Add(1)
	deadline := time.Now().Add(txFrameWait)
	for time.Now().Before(deadline) {
		runtime.Gosched()
		if try() {
			return true
		}
	}
	return false
}

// writeFrameLocked copies one packet behind an Ethernet header into a tx
// frame. full reports that no frame was free.
func (e *linkEndpoint) writeFrameLocked(pkt *stack.PacketBuffer, dst [6]byte) (ok, full bool) {
	size := pkt.Size()
	buf, token, ok := e.reserveLocked()
	if !ok {
		return false, true
	}
	if ethHeaderLen+size > len(buf) {
		e.tx.cancel([]uint64{token})
		e.ctr.txTooBig.Add(1)
		return false, false
	}
	off := e.putEthernet(buf, dst, pkt.NetworkProtocolNumber)
	for _, v := range pkt.AsSlices() {
		off += copy(buf[off:], v)
	}
	e.queueFrameLocked(buf[:off], token)
	return true, false
}

func (e *linkEndpoint) putEthernet(buf []byte, dst [6]byte, proto tcpip.NetworkProtocolNumber) int {
	copy(buf[0:6], dst[:])
	copy(buf[6:12], e.mac)
	et := uint16(ethTypeIPv4)
	if proto == header.IPv6ProtocolNumber {
		et = ethTypeIPv6
	}
	binary.BigEndian.PutUint16(buf[12:14], et)
	return ethHeaderLen
}

// writeSegmentsLocked cuts a GSO segment (IPv4 or IPv6 + TCP, TCP checksum left
// partial by netstack) into frames of at most GSOOptions.MSS payload bytes
// each, writing every frame's headers and checksums straight into UMEM:
// sequence numbers advance, FIN and PSH stay on the last frame, IP ids
// count up. A segment that does not fit the free frames is dropped whole
// (full), as a NIC queue drops it; TCP retransmits.
func (e *linkEndpoint) writeSegmentsLocked(pkt *stack.PacketBuffer, dst [6]byte) (ok, full bool) {
	ipHdr := pkt.NetworkHeader().Slice()
	tcpHdr := pkt.TransportHeader().Slice()
	v6 := pkt.NetworkProtocolNumber == header.IPv6ProtocolNumber
	minIP := header.IPv4MinimumSize
	if v6 {
		minIP = header.IPv6MinimumSize
	}
	if len(ipHdr) < minIP || len(tcpHdr) < header.TCPMinimumSize {
		e.ctr.txTooBig.Add(1) // not a TCP/IP segment: nothing we can cut
		return false, false
	}
	hdrLen := len(ipHdr) + len(tcpHdr)
	payload := pkt.Size() - hdrLen
	mss := int(pkt.GSOOptions.MSS)
	if mss <= 0 || mss > payload {
		mss = max(payload, 1)
	}
	var cur sliceCursor
	cur.init(pkt.AsSlices(), hdrLen)
	var id uint16
	var src, dstAddr tcpip.Address
	if v6 {
		ip := header.IPv6(ipHdr)
		src, dstAddr = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv4(ipHdr)
		id = ip.ID()
		src, dstAddr = ip.SourceAddress(), ip.DestinationAddress()
	}
	seq := header.TCP(tcpHdr).SequenceNumber()
	flags := header.TCP(tcpHdr).Flags()
	first := len(e.tokens)
	for off, i := 0, 0; off < payload || (payload == 0 && i == 0); i++ {
		n := min(mss, payload-off)
		buf, token, got := e.reserveLocked()
		if !got {
			e.tx.cancel(e.tokens[first:])
			e.tokens, e.lens = e.tokens[:first], e.lens[:first]
			return false, true
		}
		if ethHeaderLen+hdrLen+n > len(buf) {
			e.tx.cancel(append(e.tokens[first:], token))
			e.tokens, e.lens = e.tokens[:first], e.lens[:first]
			e.ctr.txTooBig.Add(1)
			return false, false
		}
		o := e.putEthernet(buf, dst, pkt.NetworkProtocolNumber)
		fipb := buf[o : o+len(ipHdr)]
		copy(fipb, ipHdr)
		o += len(ipHdr)
		ftcp := header.TCP(buf[o : o+len(tcpHdr)])
		copy(ftcp, tcpHdr)
		o += len(tcpHdr)
		data := buf[o : o+n]
		cur.copyTo(data)
		last := off+n >= payload
		if v6 {
			// The payload length counts what follows the fixed header
			// (netstack adds no extension header to TCP).
			header.IPv6(fipb).SetPayloadLength(uint16(hdrLen - header.IPv6MinimumSize + n))
		} else {
			fip := header.IPv4(fipb)
			fip.SetTotalLength(uint16(hdrLen + n))
			fip.SetID(id + uint16(i))
			fip.SetChecksum(0)
			fip.SetChecksum(ipv4HeaderChecksum(fipb))
		}
		ftcp.SetSequenceNumber(seq + uint32(off))
		if !last {
			ftcp.SetFlags(uint8(flags &^ (header.TCPFlagFin | header.TCPFlagPsh)))
		}
		xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dstAddr, uint16(len(tcpHdr)+n))
		if e.tx.checksum(token, uint16(ethHeaderLen+len(ipHdr)), header.TCPChecksumOffset) {
			// The kernel (or the NIC) sums the segment on its way out,
			// as it does for its own sockets.
			ftcp.SetChecksum(xsum)
		} else {
			ftcp.SetChecksum(0)
			xsum = checksum.Checksum(data, xsum)
			ftcp.SetChecksum(^ftcp.CalculateChecksum(xsum))
		}
		e.queueFrameLocked(buf[:o+n], token)
		off += n
	}
	return true, false
}

// sliceCursor reads a packet's bytes, spread over several slices, in order.
type sliceCursor struct {
	views [][]byte
	i, j  int // views[i][j] is the next byte
}

// init positions the cursor skip bytes into views.
func (c *sliceCursor) init(views [][]byte, skip int) {
	c.views = views
	for c.i < len(c.views) && skip >= len(c.views[c.i]) {
		skip -= len(c.views[c.i])
		c.i++
	}
	c.j = skip
}

// copyTo fills dst with the next len(dst) bytes (fewer if the packet ends).
func (c *sliceCursor) copyTo(dst []byte) int {
	n := 0
	for n < len(dst) && c.i < len(c.views) {
		k := copy(dst[n:], c.views[c.i][c.j:])
		n += k
		c.j += k
		if c.j == len(c.views[c.i]) {
			c.i++
			c.j = 0
		}
	}
	return n
}

// ipv4HeaderChecksum returns the checksum to store in an IPv4 header
// whose checksum field is zero: the ones' complement of the ones'
// complement sum of its 16-bit words. A header is 20 to 60 bytes, where
// a plain loop beats the general routine (which is built for payloads).
func ipv4HeaderChecksum(h []byte) uint16 {
	n := int(h[0]&0xf) * 4
	if n > len(h) {
		n = len(h)
	}
	var sum uint32
	for i := 0; i+1 < n; i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
