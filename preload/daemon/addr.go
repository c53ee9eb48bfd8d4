package daemon

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// Addresses travel as struct fss_sockaddr: family (host order), port and
// address in network byte order (sockaddr_in's byte layout for AF_INET,
// sockaddr_in6's fields for AF_INET6: flowinfo, addr[16], scope_id).

// decodeAddr reads the address a socket of the given family (AF_INET or
// AF_INET6) was given. An AF_INET6 address keeps its 16-byte form
// (::ffff:a.b.c.d stays v4-mapped; netAddr says where it goes), with
// scope_id as a numeric zone.
func decodeAddr(b []byte, family int32) (netip.AddrPort, syscall.Errno) {
	if len(b) < 28 {
		return netip.AddrPort{}, syscall.EINVAL
	}
	f := int32(binary.LittleEndian.Uint16(b[0:2]))
	if f != family {
		return netip.AddrPort{}, syscall.EAFNOSUPPORT
	}
	port := binary.BigEndian.Uint16(b[2:4])
	switch f {
	case syscall.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[8:12])), port), 0
	case syscall.AF_INET6:
		a := netip.AddrFrom16([16]byte(b[8:24]))
		if scope := binary.LittleEndian.Uint32(b[24:28]); scope != 0 && a.Is6() && !a.Is4In6() {
			a = a.WithZone(strconv.FormatUint(uint64(scope), 10))
		}
		return netip.AddrPortFrom(a, port), 0
	}
	return netip.AddrPort{}, syscall.EAFNOSUPPORT
}

// encodeAddr writes ap as an address of the given family: an AF_INET6
// socket sees IPv4 addresses v4-mapped (::ffff:a.b.c.d), as the kernel's
// dual-stack sockets report them; an AF_INET socket sees IPv4 only (an
// IPv6 address, which it cannot have, reads as 0.0.0.0).
func encodeAddr(b []byte, ap netip.AddrPort, family int32) {
	clear(b[:28])
	binary.BigEndian.PutUint16(b[2:4], ap.Port())
	a := ap.Addr()
	if family == syscall.AF_INET6 {
		binary.LittleEndian.PutUint16(b[0:2], syscall.AF_INET6)
		if !a.IsValid() {
			return
		}
		if a.Is4() {
			a = netip.AddrFrom16(a.As16())
		}
		a16 := a.As16()
		copy(b[8:24], a16[:])
		binary.LittleEndian.PutUint32(b[24:28], scopeID(a.Zone()))
		return
	}
	binary.LittleEndian.PutUint16(b[0:2], syscall.AF_INET)
	if a = a.Unmap(); a.Is4() {
		a4 := a.As4()
		copy(b[8:12], a4[:])
	}
}

// scopeID is the interface index a zone names: a number, or an interface
// name of the daemon's namespace (the net package's zones). 0 if none.
func scopeID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	return 0
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

// wildcard is the unspecified address of a family.
func wildcard(family int32) netip.Addr {
	if family == syscall.AF_INET6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// dialTarget is where a connect of a socket of the given family goes: the
// network for the backend's DialContext and the address, unmapped for a
// v4-mapped destination of an AF_INET6 socket (which connects over IPv4,
// ENETUNREACH when the socket is IPV6_V6ONLY, as tcp_v6_connect).
func dialTarget(family int32, v6only bool, ap netip.AddrPort) (string, netip.AddrPort, syscall.Errno) {
	if family != syscall.AF_INET6 {
		return "tcp4", ap, 0
	}
	if ap.Addr().Is4In6() {
		if v6only {
			return "", ap, syscall.ENETUNREACH
		}
		return "tcp4", netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), 0
	}
	return "tcp6", ap, 0
}
