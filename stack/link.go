package stack

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// txRing is the transmit half of a shard's AF_XDP socket, as the link
// endpoint sees it. reserve hands out a free frame; commit posts the
// reserved frames with their lengths and wakes the kernel. Callers
// serialize (the link endpoint holds txMu).
type txRing interface {
	reserve() (buf []byte, token uint64, ok bool)
	commit(tokens []uint64, lens []uint32) int
	// cancel returns reserved but unsent frames.
	cancel(tokens []uint64)
}

// linkEndpoint adapts one shard's AF_XDP queue to its gVisor stack. It is
// an L3 endpoint: the shard's receive loop strips the Ethernet header
// before delivery, and WritePackets adds one using the kernel's neighbour
// table, so netstack never speaks ARP (the kernel keeps the control plane).
//
// Threading: deliver is called by the shard goroutine only; WritePackets is
// called by any netstack goroutine and serializes on txMu.
type linkEndpoint struct {
	mtu   uint32
	mac   tcpip.LinkAddress
	caps  stack.LinkEndpointCapabilities
	neigh *neighbourTable
	ctr   *shardCounters

	dispatcher atomic.Pointer[dispatcherBox]

	txMu     sync.Mutex // guards tx, tokens, lens
	tx       txRing
	tokens   []uint64
	lens     []uint32
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

// deliver hands an inbound IPv4 packet to netstack. Shard goroutine only.
func (e *linkEndpoint) deliver(pkt *stack.PacketBuffer) {
	if b := e.dispatcher.Load(); b != nil {
		b.d.DeliverNetworkPacket(header.IPv4ProtocolNumber, pkt)
	}
}

// WritePackets frames each packet with an Ethernet header and queues it on
// the shard's AF_XDP transmit ring. A packet whose next hop has no known
// link address starts resolution in the kernel and is dropped; TCP
// retransmits it.
func (e *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.txMu.Lock()
	defer e.txMu.Unlock()
	e.tokens = e.tokens[:0]
	e.lens = e.lens[:0]
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
			e.ctr.txNoNeighbour.Add(1)
			continue
		}
		size := pkt.Size()
		buf, token, ok := e.tx.reserve()
		if !ok {
			e.ctr.txNoFrame.Add(uint64(len(all) - i)) // this packet and the rest of the batch
			break
		}
		if ethHeaderLen+size > len(buf) {
			e.tx.cancel([]uint64{token})
			e.ctr.txTooBig.Add(1)
			continue
		}
		copy(buf[0:6], dst[:])
		copy(buf[6:12], e.mac)
		binary.BigEndian.PutUint16(buf[12:14], ethTypeIPv4)
		off := ethHeaderLen
		for _, v := range pkt.AsSlices() {
			off += copy(buf[off:], v)
		}
		e.tokens = append(e.tokens, token)
		e.lens = append(e.lens, uint32(off))
		sent++
	}
	if len(e.tokens) > 0 {
		posted := e.tx.commit(e.tokens, e.lens)
		if posted < len(e.tokens) {
			e.tx.cancel(e.tokens[posted:])
			e.ctr.txNoFrame.Add(uint64(len(e.tokens) - posted))
		}
		e.ctr.txPackets.Add(uint64(posted))
	}
	if sent == 0 && pkts.Len() > 0 {
		// Nothing left the host; report it as a full queue so callers
		// retry later rather than treating the route as dead.
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return sent, nil
}
