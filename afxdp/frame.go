package afxdp

// A Go model of the steering program's parser and decision. It is the
// reference the BPF program is tested against (differential tests and
// fuzzing), and a small parser for tests and diagnostics.

import (
	"encoding/binary"
	"net/netip"
)

// TCP flag bits (byte 13 of the TCP header).
const (
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
)

// TCPInfo is what ParseTCP4 extracts from an Ethernet/IPv4/TCP frame.
type TCPInfo struct {
	Src, Dst     netip.AddrPort
	Seq, Ack     uint32
	Flags        uint8
	IPHeaderLen  int // IHL*4
	TCPHeaderLen int // data offset*4
	PayloadOff   int // offset of the TCP payload in the frame
	PayloadLen   int // from the IPv4 total length, clamped to the frame
}

// ParseTCP4 parses an Ethernet frame carrying an unfragmented IPv4 TCP
// segment. ok is false for anything else or anything truncated; it never
// panics and every offset it returns lies inside frame.
func ParseTCP4(frame []byte) (info TCPInfo, ok bool) {
	if len(frame) < ethLen+ipMinLen || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
		return info, false
	}
	ip := frame[ethLen:]
	if ip[0]>>4 != 4 {
		return info, false
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < ipMinLen || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 || ip[9] != protoTCP {
		return info, false
	}
	if len(ip) < ihl+tcpMinLen {
		return info, false
	}
	tcp := ip[ihl:]
	doff := int(tcp[12]>>4) * 4
	if doff < tcpMinLen || len(tcp) < doff {
		return info, false
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total < ihl+doff {
		return info, false
	}
	payload := total - ihl - doff
	if max := len(tcp) - doff; payload > max {
		payload = max
	}
	info = TCPInfo{
		Src:          netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(tcp[0:])),
		Dst:          netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(tcp[2:])),
		Seq:          binary.BigEndian.Uint32(tcp[4:]),
		Ack:          binary.BigEndian.Uint32(tcp[8:]),
		Flags:        tcp[13],
		IPHeaderLen:  ihl,
		TCPHeaderLen: doff,
		PayloadOff:   ethLen + ihl + doff,
		PayloadLen:   payload,
	}
	return info, true
}

// steerVerdict is what the steering program decides for a frame.
type steerVerdict int

const (
	verdictPass      steerVerdict = iota // not ours: kernel
	verdictMalformed                     // truncated / bad IPv4 or IPv6: kernel, counted
	verdictOurs                          // redirect to the queue's socket
	verdictShed                          // ours, but a SYN without ACK while the queue sheds them: dropped
)

// steerTables is the Go model of the program's maps.
type steerTables struct {
	addrs       map[[4]byte]bool
	ports       map[portKey]bool
	addrs6      map[[16]byte]bool
	ports6      map[portKey6]bool
	first, last uint16
	shed        bool // the queue sheds SYNs (the shed map's "on" for it)
}

// classify mirrors steeringProgram exactly (including what it does not
// check: the TCP data offset and the IPv4 total length are ignored).
func classify(frame []byte, t *steerTables) steerVerdict {
	if len(frame) < ethLen {
		return verdictMalformed
	}
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x86dd:
		return classify6(frame[ethLen:], t)
	case 0x0800:
	default:
		return verdictPass
	}
	if len(frame) < ethLen+ipMinLen {
		return verdictMalformed
	}
	ip := frame[ethLen:]
	if ip[0]>>4 != 4 || ip[0]&0x0f < 5 {
		return verdictMalformed
	}
	if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
		return verdictPass
	}
	if ip[9] == protoICMP {
		return classifyICMP(ip, t)
	}
	if ip[9] != protoTCP {
		return verdictPass
	}
	ihl := int(ip[0]&0x0f) * 4
	if len(ip) < ihl+tcpMinLen {
		return verdictMalformed
	}
	var daddr [4]byte
	copy(daddr[:], ip[16:20])
	return t.shedding(t.owns(daddr, binary.BigEndian.Uint16(ip[ihl+2:])), ip[ihl+tcpFlagsOff])
}

// shedding turns the verdict for a TCP segment with flags into
// verdictShed when it is ours, a SYN without ACK, and the queue sheds.
func (t *steerTables) shedding(v steerVerdict, flags byte) steerVerdict {
	if v == verdictOurs && t.shed && flags&(tcpFlagSyn|tcpFlagAck) == tcpFlagSyn {
		return verdictShed
	}
	return v
}

// classifyICMP mirrors the program's ICMP branch: a "fragmentation needed"
// error (type 3 code 4) whose quoted IPv4 header (first fragment) and TCP
// ports name a flow fsstack owns, seen from its side (quoted source
// address and port), is fsstack's; every other ICMP message, readable or
// not, is the kernel's.
func classifyICMP(ip []byte, t *steerTables) steerVerdict {
	ihl := int(ip[0]&0x0f) * 4
	if len(ip) < ihl+icmpHdrLen+ipMinLen {
		return verdictPass
	}
	icmp := ip[ihl:]
	if icmp[0] != icmpDestUnreach || icmp[1] != icmpFragNeeded {
		return verdictPass
	}
	in := icmp[icmpHdrLen:]
	if in[0]>>4 != 4 || in[0]&0x0f < 5 || in[9] != protoTCP || binary.BigEndian.Uint16(in[6:])&0x1fff != 0 {
		return verdictPass
	}
	inIHL := int(in[0]&0x0f) * 4
	if len(in) < inIHL+4 {
		return verdictPass
	}
	var saddr [4]byte
	copy(saddr[:], in[12:16])
	return t.owns(saddr, binary.BigEndian.Uint16(in[inIHL:]))
}

// owns decides for a local address and port: steered if the address is
// owned and the port is in the ephemeral range or owned on that address or
// on any.
func (t *steerTables) owns(addr [4]byte, port uint16) steerVerdict {
	if !t.addrs[addr] {
		return verdictPass
	}
	if t.first != 0 && port >= t.first && port <= t.last {
		return verdictOurs
	}
	k := portKey{Addr: addr, Port: [2]byte{byte(port >> 8), byte(port)}}
	if t.ports[k] {
		return verdictOurs
	}
	k.Addr = [4]byte{}
	if t.ports[k] {
		return verdictOurs
	}
	return verdictPass
}

// classify6 mirrors the program's IPv6 branch: TCP right after the fixed
// header (no extension headers) to an owned IPv6 address and port is
// fsstack's, and so is an ICMPv6 "packet too big" quoting such a flow
// (classifyICMP6); every other next header (the rest of ICMPv6, neighbour
// discovery included) is the kernel's.
func classify6(ip []byte, t *steerTables) steerVerdict {
	if len(ip) < ip6HdrLen || ip[0]>>4 != 6 {
		return verdictMalformed
	}
	if ip[6] == protoICMPv6 {
		return classifyICMP6(ip, t)
	}
	if ip[6] != protoTCP {
		return verdictPass
	}
	if len(ip) < ip6HdrLen+tcpMinLen {
		return verdictMalformed
	}
	return t.shedding(t.owns6([16]byte(ip[24:40]), binary.BigEndian.Uint16(ip[ip6HdrLen+2:])), ip[ip6HdrLen+tcpFlagsOff])
}

// classifyICMP6 mirrors the program's ICMPv6 branch: a "packet too big"
// (type 2 code 0) whose quoted IPv6 header is followed by TCP and whose
// quoted source address and port (fsstack's side of the flow) are owned is
// fsstack's; every other ICMPv6 message is the kernel's.
func classifyICMP6(ip []byte, t *steerTables) steerVerdict {
	if len(ip) < ip6HdrLen+icmpHdrLen+ip6HdrLen+4 {
		return verdictPass
	}
	icmp := ip[ip6HdrLen:]
	if icmp[0] != icmp6PacketTooBig || icmp[1] != 0 {
		return verdictPass
	}
	in := icmp[icmpHdrLen:]
	if in[6] != protoTCP {
		return verdictPass
	}
	return t.owns6([16]byte(in[8:24]), binary.BigEndian.Uint16(in[ip6HdrLen:]))
}

// owns6 is owns for an IPv6 local address.
func (t *steerTables) owns6(addr [16]byte, port uint16) steerVerdict {
	if !t.addrs6[addr] {
		return verdictPass
	}
	if t.first != 0 && port >= t.first && port <= t.last {
		return verdictOurs
	}
	k := portKey6{Addr: addr, Port: [2]byte{byte(port >> 8), byte(port)}}
	if t.ports6[k] {
		return verdictOurs
	}
	k.Addr = [16]byte{}
	if t.ports6[k] {
		return verdictOurs
	}
	return verdictPass
}
