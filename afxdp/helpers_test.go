package afxdp

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// frameSpec describes a test frame; build turns it into bytes.
type frameSpec struct {
	srcMAC, dstMAC net.HardwareAddr
	etherType      uint16 // 0: IPv4, or IPv6 when dst is an IPv6 address
	src, dst       netip.AddrPort
	proto          uint8 // 0: TCP
	ipOptWords     int   // IHL = 5 + ipOptWords
	fragOff        uint16
	flags          uint8 // TCP flags
	payload        []byte
}

func checksum(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func (f frameSpec) build() []byte {
	if f.dst.Addr().Is6() {
		return f.build6()
	}
	et := f.etherType
	if et == 0 {
		et = 0x0800
	}
	proto := f.proto
	if proto == 0 {
		proto = protoTCP
	}
	b := make([]byte, 14)
	copy(b[0:6], f.dstMAC)
	copy(b[6:12], f.srcMAC)
	binary.BigEndian.PutUint16(b[12:], et)
	ihl := 20 + 4*f.ipOptWords
	var l4 []byte
	switch proto {
	case protoTCP:
		l4 = make([]byte, 20+len(f.payload))
		binary.BigEndian.PutUint16(l4[0:], f.src.Port())
		binary.BigEndian.PutUint16(l4[2:], f.dst.Port())
		binary.BigEndian.PutUint32(l4[4:], 1000)
		l4[12] = 5 << 4
		l4[13] = f.flags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		copy(l4[20:], f.payload)
	case 17: // UDP
		l4 = make([]byte, 8+len(f.payload))
		binary.BigEndian.PutUint16(l4[0:], f.src.Port())
		binary.BigEndian.PutUint16(l4[2:], f.dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], f.payload)
	default:
		l4 = append([]byte(nil), f.payload...)
	}
	ip := make([]byte, ihl)
	ip[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(ihl+len(l4)))
	binary.BigEndian.PutUint16(ip[6:], f.fragOff)
	ip[8] = 64
	ip[9] = proto
	s4, d4 := f.src.Addr().As4(), f.dst.Addr().As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	for i := 20; i < ihl; i++ {
		ip[i] = 1 // NOP options
	}
	binary.BigEndian.PutUint16(ip[10:], fold(checksum(0, ip)))
	// L4 checksum over the pseudo-header.
	var pseudo [12]byte
	copy(pseudo[0:], s4[:])
	copy(pseudo[4:], d4[:])
	pseudo[9] = proto
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(l4)))
	switch proto {
	case protoTCP:
		binary.BigEndian.PutUint16(l4[16:], fold(checksum(checksum(0, pseudo[:]), l4)))
	case 17:
		c := fold(checksum(checksum(0, pseudo[:]), l4))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	}
	b = append(b, ip...)
	return append(b, l4...)
}

// l4 returns the TCP or UDP header and payload (or the bare payload for
// another protocol) with the checksum over pseudo (the IP pseudo-header).
func (f frameSpec) l4(proto uint8, pseudo []byte) []byte {
	var l4 []byte
	switch proto {
	case protoTCP:
		l4 = make([]byte, 20+len(f.payload))
		binary.BigEndian.PutUint16(l4[0:], f.src.Port())
		binary.BigEndian.PutUint16(l4[2:], f.dst.Port())
		binary.BigEndian.PutUint32(l4[4:], 1000)
		l4[12] = 5 << 4
		l4[13] = f.flags
		binary.BigEndian.PutUint16(l4[14:], 65535)
		copy(l4[20:], f.payload)
		binary.BigEndian.PutUint16(l4[16:], fold(checksum(checksum(0, pseudo), l4)))
	case 17: // UDP
		l4 = make([]byte, 8+len(f.payload))
		binary.BigEndian.PutUint16(l4[0:], f.src.Port())
		binary.BigEndian.PutUint16(l4[2:], f.dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], f.payload)
		c := fold(checksum(checksum(0, pseudo), l4))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[6:], c)
	default:
		l4 = append([]byte(nil), f.payload...)
	}
	return l4
}

// build6 builds an IPv6 frame: the fixed header, proto as the next
// header (TCP when 0) and no extension headers.
func (f frameSpec) build6() []byte {
	et := f.etherType
	if et == 0 {
		et = 0x86dd
	}
	proto := f.proto
	if proto == 0 {
		proto = protoTCP
	}
	b := make([]byte, 14)
	copy(b[0:6], f.dstMAC)
	copy(b[6:12], f.srcMAC)
	binary.BigEndian.PutUint16(b[12:], et)
	s16, d16 := f.src.Addr().As16(), f.dst.Addr().As16()
	// Pseudo-header: addresses, upper-layer length, next header.
	pseudo := make([]byte, 40)
	copy(pseudo[0:], s16[:])
	copy(pseudo[16:], d16[:])
	pseudo[39] = proto
	n := len(f.payload)
	switch proto {
	case protoTCP:
		n += 20
	case 17:
		n += 8
	}
	binary.BigEndian.PutUint32(pseudo[32:], uint32(n))
	l4 := f.l4(proto, pseudo)
	ip := make([]byte, ip6HdrLen)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
	ip[6] = proto
	ip[7] = 64
	copy(ip[8:], s16[:])
	copy(ip[24:], d16[:])
	b = append(b, ip...)
	return append(b, l4...)
}
