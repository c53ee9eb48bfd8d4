package daemon

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
)

// Addresses travel as struct fss_sockaddr: family (host order), port and
// address in network byte order (sockaddr_in's byte layout).

func decodeAddr(b []byte) (netip.AddrPort, syscall.Errno) {
	if len(b) < 28 {
		return netip.AddrPort{}, syscall.EINVAL
	}
	switch binary.LittleEndian.Uint16(b[0:2]) {
	case syscall.AF_INET:
		a := netip.AddrFrom4([4]byte(b[8:12]))
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[2:4])), 0
	default:
		return netip.AddrPort{}, syscall.EAFNOSUPPORT
	}
}

func encodeAddr(b []byte, ap netip.AddrPort) {
	clear(b[:28])
	binary.LittleEndian.PutUint16(b[0:2], syscall.AF_INET)
	binary.BigEndian.PutUint16(b[2:4], ap.Port())
	a4 := ap.Addr().Unmap().As4()
	copy(b[8:12], a4[:])
}

// addrPortOf converts a net.Addr from a backend.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case nil:
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap
		}
	}
	return netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
}
