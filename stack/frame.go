package stack

import (
	"encoding/binary"
	"net/netip"
)

// Frame layout constants (Ethernet II, IPv4, TCP).
const (
	ethHeaderLen  = 14
	ethTypeIPv4   = 0x0800
	ipv4MinHeader = 20
	tcpMinHeader  = 20
	protoTCP      = 6
	protoICMP     = 1
	icmpHdrLen    = 8

	icmpDestUnreach = 3
	icmpFragNeeded  = 4

	tcpFlagFin = 0x01
	tcpFlagSyn = 0x02
	tcpFlagRst = 0x04
	tcpFlagAck = 0x10
)

// flowKey names a TCP flow from fsstack's side: local is the address the
// segment was sent to.
type flowKey struct {
	localAddr, remoteAddr [4]byte
	localPort, remotePort uint16
}

// segmentInfo is what the receive path needs to know about a frame to
// steer it: its flow, its TCP flags and where the IPv4 packet starts and
// ends inside the frame.
type segmentInfo struct {
	flow     flowKey
	flags    uint8
	seq      uint32 // TCP sequence number (a SYN's is the flow's ISN)
	ack      uint32 // TCP acknowledgement number
	ipStart  int    // offset of the IPv4 header in the frame
	ipLength int    // IPv4 total length (header + payload), trimmed of link padding
	tcpStart int    // offset of the TCP header in the frame
	// icmp marks an ICMP error about the flow (fragmentation needed): the
	// flow is the one its quoted segment belongs to; flags, seq, ack and
	// tcpStart are zero.
	icmp bool
}

// isSyn reports whether the segment opens a connection (SYN without ACK).
func (s *segmentInfo) isSyn() bool { return s.flags&(tcpFlagSyn|tcpFlagAck) == tcpFlagSyn }

// parseSegment decodes an Ethernet frame carrying an IPv4 TCP segment. It
// never panics: a frame that is truncated, not IPv4/TCP, a fragment, or
// whose lengths disagree yields ok == false. The XDP program already
// filtered frames, so anything rejected here is malformed or hostile.
func parseSegment(frame []byte) (info segmentInfo, ok bool) {
	if len(frame) < ethHeaderLen+ipv4MinHeader {
		return info, false
	}
	if binary.BigEndian.Uint16(frame[12:14]) != ethTypeIPv4 {
		return info, false
	}
	ip := frame[ethHeaderLen:]
	if ip[0]>>4 != 4 {
		return info, false
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < ipv4MinHeader || len(ip) < ihl {
		return info, false
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total < ihl+tcpMinHeader || total > len(ip) {
		return info, false
	}
	if fragField := binary.BigEndian.Uint16(ip[6:8]); fragField&0x3fff != 0 {
		return info, false // more-fragments flag or a fragment offset
	}
	if ip[9] != protoTCP {
		return info, false
	}
	tcp := ip[ihl:total]
	dataOff := int(tcp[12]>>4) * 4
	if dataOff < tcpMinHeader || dataOff > len(tcp) {
		return info, false
	}
	copy(info.flow.remoteAddr[:], ip[12:16])
	copy(info.flow.localAddr[:], ip[16:20])
	info.flow.remotePort = binary.BigEndian.Uint16(tcp[0:2])
	info.flow.localPort = binary.BigEndian.Uint16(tcp[2:4])
	info.flags = tcp[13]
	info.seq = binary.BigEndian.Uint32(tcp[4:8])
	info.ack = binary.BigEndian.Uint32(tcp[8:12])
	info.ipStart = ethHeaderLen
	info.ipLength = total
	info.tcpStart = ethHeaderLen + ihl
	return info, true
}

// parseICMPError decodes an Ethernet frame carrying an ICMP
// "fragmentation needed" error that quotes an IPv4 TCP segment this side
// sent: the flow is that segment's, seen from this side (the quoted source
// is the local address). The steering program passes only such errors for
// flows fsstack owns; anything else yields ok == false.
func parseICMPError(frame []byte) (info segmentInfo, ok bool) {
	if len(frame) < ethHeaderLen+ipv4MinHeader || binary.BigEndian.Uint16(frame[12:14]) != ethTypeIPv4 {
		return info, false
	}
	ip := frame[ethHeaderLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < ipv4MinHeader || ip[9] != protoICMP {
		return info, false
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total < ihl+icmpHdrLen+ipv4MinHeader || total > len(ip) || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
		return info, false
	}
	icmp := ip[ihl:total]
	if icmp[0] != icmpDestUnreach || icmp[1] != icmpFragNeeded {
		return info, false
	}
	in := icmp[icmpHdrLen:]
	inIHL := int(in[0]&0x0f) * 4
	if in[0]>>4 != 4 || inIHL < ipv4MinHeader || in[9] != protoTCP || len(in) < inIHL+4 {
		return info, false
	}
	copy(info.flow.localAddr[:], in[12:16])
	copy(info.flow.remoteAddr[:], in[16:20])
	info.flow.localPort = binary.BigEndian.Uint16(in[inIHL:])
	info.flow.remotePort = binary.BigEndian.Uint16(in[inIHL+2:])
	info.ipStart = ethHeaderLen
	info.ipLength = total
	info.icmp = true
	return info, true
}

func (k flowKey) String() string {
	return netip.AddrPortFrom(netip.AddrFrom4(k.localAddr), k.localPort).String() + "<-" +
		netip.AddrPortFrom(netip.AddrFrom4(k.remoteAddr), k.remotePort).String()
}
