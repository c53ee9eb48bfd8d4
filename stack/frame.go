package stack

import (
	"encoding/binary"
	"net/netip"
)

// Frame layout constants (Ethernet II, IPv4, TCP).
const (
	ethHeaderLen  = 14
	ethTypeIPv4   = 0x0800
	ethTypeIPv6   = 0x86dd
	ipv4MinHeader = 20
	ipv6HeaderLen = 40
	tcpMinHeader  = 20
	protoTCP      = 6
	protoICMP     = 1
	icmpHdrLen    = 8

	icmpDestUnreach   = 3
	icmpFragNeeded    = 4
	protoICMPv6       = 58
	icmp6PacketTooBig = 2

	tcpFlagFin = 0x01
	tcpFlagSyn = 0x02
	tcpFlagRst = 0x04
	tcpFlagAck = 0x10
)

// flowKey names a TCP flow from fsstack's side: local is the address the
// segment was sent to. Addresses are 16 bytes: an IPv6 address, or an
// IPv4 address in its v4-mapped form (::ffff:a.b.c.d), so one key type
// and one flow directory serve both families.
type flowKey struct {
	localAddr, remoteAddr [16]byte
	localPort, remotePort uint16
}

// v4mappedPrefix is the first 12 bytes of a v4-mapped address.
var v4mappedPrefix = [12]byte{10: 0xff, 11: 0xff}

// put4 stores the IPv4 address b (4 bytes) as a v4-mapped address.
func put4(dst *[16]byte, b []byte) {
	*(*[12]byte)(dst[:12]) = v4mappedPrefix
	copy(dst[12:], b[:4])
}

// isV4 reports whether the flow is an IPv4 flow (its addresses v4-mapped).
func (k *flowKey) isV4() bool { return [12]byte(k.localAddr[:12]) == v4mappedPrefix }

// segmentInfo is what the receive path needs to know about a frame to
// steer it: its flow, its TCP flags and where the IPv4 packet starts and
// ends inside the frame.
type segmentInfo struct {
	flow     flowKey
	flags    uint8
	seq      uint32 // TCP sequence number (a SYN's is the flow's ISN)
	ack      uint32 // TCP acknowledgement number
	ipStart  int    // offset of the IP header in the frame
	ipLength int    // IP packet length (header + payload), trimmed of link padding
	tcpStart int    // offset of the TCP header in the frame
	tcpLen   int    // TCP header length, options included (its data offset)
	v6       bool   // an IPv6 packet (else IPv4)
	// icmp marks an ICMP error about the flow (fragmentation needed): the
	// flow is the one its quoted segment belongs to; flags, seq, ack and
	// tcpStart are zero.
	icmp bool
}

// isSyn reports whether the segment opens a connection (SYN without ACK).
func (s *segmentInfo) isSyn() bool { return s.flags&(tcpFlagSyn|tcpFlagAck) == tcpFlagSyn }

// parseSegment decodes an Ethernet frame carrying an IPv4 or IPv6 TCP
// segment. It never panics: a frame that is truncated, not IPv4/TCP or
// IPv6/TCP (extension headers included), a fragment, or whose lengths
// disagree yields ok == false. The XDP program already filtered frames,
// so anything rejected here is malformed or hostile.
func parseSegment(frame []byte) (info segmentInfo, ok bool) {
	if len(frame) < ethHeaderLen+ipv4MinHeader {
		return info, false
	}
	if et := binary.BigEndian.Uint16(frame[12:14]); et != ethTypeIPv4 {
		if et == ethTypeIPv6 {
			return parseSegment6(frame)
		}
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
	if !info.readTCP(ip[ihl:total]) {
		return info, false
	}
	put4(&info.flow.remoteAddr, ip[12:16])
	put4(&info.flow.localAddr, ip[16:20])
	info.ipStart = ethHeaderLen
	info.ipLength = total
	info.tcpStart = ethHeaderLen + ihl
	return info, true
}

// readTCP reads the ports, flags, sequence and acknowledgement numbers of
// a TCP header (with its payload) into info, and reports whether the
// header's data offset is sane.
func (info *segmentInfo) readTCP(tcp []byte) bool {
	dataOff := int(tcp[12]>>4) * 4
	if dataOff < tcpMinHeader || dataOff > len(tcp) {
		return false
	}
	info.tcpLen = dataOff
	info.flow.remotePort = binary.BigEndian.Uint16(tcp[0:2])
	info.flow.localPort = binary.BigEndian.Uint16(tcp[2:4])
	info.flags = tcp[13]
	info.seq = binary.BigEndian.Uint32(tcp[4:8])
	info.ack = binary.BigEndian.Uint32(tcp[8:12])
	return true
}

// parseICMPError decodes an Ethernet frame carrying an ICMP
// "fragmentation needed" error that quotes an IPv4 TCP segment this side
// sent: the flow is that segment's, seen from this side (the quoted source
// is the local address). The steering program passes only such errors for
// flows fsstack owns; anything else yields ok == false.
func parseICMPError(frame []byte) (info segmentInfo, ok bool) {
	if len(frame) >= ethHeaderLen+ipv6HeaderLen && binary.BigEndian.Uint16(frame[12:14]) == ethTypeIPv6 {
		return parseICMPError6(frame)
	}
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
	put4(&info.flow.localAddr, in[12:16])
	put4(&info.flow.remoteAddr, in[16:20])
	info.flow.localPort = binary.BigEndian.Uint16(in[inIHL:])
	info.flow.remotePort = binary.BigEndian.Uint16(in[inIHL+2:])
	info.ipStart = ethHeaderLen
	info.ipLength = total
	info.icmp = true
	return info, true
}

// parseICMPError6 is parseICMPError for IPv6: an ICMPv6 "packet too big"
// (type 2 code 0) right after the fixed header, quoting an IPv6 header
// followed by TCP and at least the ports. The flow is the quoted
// segment's, seen from fsstack's side.
func parseICMPError6(frame []byte) (info segmentInfo, ok bool) {
	ip := frame[ethHeaderLen:]
	if ip[0]>>4 != 6 || ip[6] != protoICMPv6 {
		return info, false
	}
	total := ipv6HeaderLen + int(binary.BigEndian.Uint16(ip[4:6]))
	if total < ipv6HeaderLen+icmpHdrLen+ipv6HeaderLen+4 || total > len(ip) {
		return info, false
	}
	icmp := ip[ipv6HeaderLen:total]
	if icmp[0] != icmp6PacketTooBig || icmp[1] != 0 {
		return info, false
	}
	in := icmp[icmpHdrLen:]
	if in[0]>>4 != 6 || in[6] != protoTCP {
		return info, false
	}
	info.flow.localAddr = [16]byte(in[8:24])
	info.flow.remoteAddr = [16]byte(in[24:40])
	info.flow.localPort = binary.BigEndian.Uint16(in[ipv6HeaderLen:])
	info.flow.remotePort = binary.BigEndian.Uint16(in[ipv6HeaderLen+2:])
	info.ipStart = ethHeaderLen
	info.ipLength = total
	info.v6 = true
	info.icmp = true
	return info, true
}

// parseSegment6 is parseSegment for an IPv6 frame: TCP must follow the
// fixed header (the steering program passes nothing else).
func parseSegment6(frame []byte) (info segmentInfo, ok bool) {
	if len(frame) < ethHeaderLen+ipv6HeaderLen {
		return info, false
	}
	ip := frame[ethHeaderLen:]
	if ip[0]>>4 != 6 || ip[6] != protoTCP {
		return info, false
	}
	total := ipv6HeaderLen + int(binary.BigEndian.Uint16(ip[4:6]))
	if total < ipv6HeaderLen+tcpMinHeader || total > len(ip) {
		return info, false
	}
	if !info.readTCP(ip[ipv6HeaderLen:total]) {
		return info, false
	}
	info.flow.remoteAddr = [16]byte(ip[8:24])
	info.flow.localAddr = [16]byte(ip[24:40])
	info.ipStart = ethHeaderLen
	info.ipLength = total
	info.tcpStart = ethHeaderLen + ipv6HeaderLen
	info.v6 = true
	return info, true
}

func (k flowKey) String() string {
	return netip.AddrPortFrom(netip.AddrFrom16(k.localAddr).Unmap(), k.localPort).String() + "<-" +
		netip.AddrPortFrom(netip.AddrFrom16(k.remoteAddr).Unmap(), k.remotePort).String()
}
