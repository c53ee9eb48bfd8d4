package daemon

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"testing"
)

// TestAddrFamilies: fss_sockaddr in the socket's family. An AF_INET6
// socket sees IPv4 addresses v4-mapped and its scope id as the zone; an
// address of the other family is EAFNOSUPPORT; a v4-mapped destination
// dials IPv4 unless the socket is IPv6-only (ENETUNREACH).
func TestAddrFamilies(t *testing.T) {
	b := make([]byte, 32)
	for _, c := range []struct {
		family int32
		in     netip.AddrPort
		want   netip.AddrPort // what decodes back
	}{
		{syscall.AF_INET, netip.MustParseAddrPort("198.18.0.1:80"), netip.MustParseAddrPort("198.18.0.1:80")},
		{syscall.AF_INET, netip.MustParseAddrPort("[::ffff:198.18.0.1]:80"), netip.MustParseAddrPort("198.18.0.1:80")},
		{syscall.AF_INET6, netip.MustParseAddrPort("[fd00:f5::1]:443"), netip.MustParseAddrPort("[fd00:f5::1]:443")},
		{syscall.AF_INET6, netip.MustParseAddrPort("198.18.0.2:5000"), netip.MustParseAddrPort("[::ffff:198.18.0.2]:5000")},
		{syscall.AF_INET6, netip.MustParseAddrPort("[fe80::1%7]:22"), netip.MustParseAddrPort("[fe80::1%7]:22")},
		{syscall.AF_INET6, netip.AddrPortFrom(netip.IPv6Unspecified(), 0), netip.AddrPortFrom(netip.IPv6Unspecified(), 0)},
	} {
		encodeAddr(b, c.in, c.family)
		if f := int32(binary.LittleEndian.Uint16(b)); f != c.family {
			t.Errorf("%v as family %d: encoded family %d", c.in, c.family, f)
		}
		got, e := decodeAddr(b, c.family)
		if e != 0 || got != c.want {
			t.Errorf("%v as family %d: decodes to %v, %v; want %v", c.in, c.family, got, e, c.want)
		}
		other := int32(syscall.AF_INET6)
		if c.family == syscall.AF_INET6 {
			other = syscall.AF_INET
		}
		if _, e := decodeAddr(b, other); e != syscall.EAFNOSUPPORT {
			t.Errorf("%v for a socket of family %d: %v, want EAFNOSUPPORT", c.in, other, e)
		}
	}
	mapped := netip.MustParseAddrPort("[::ffff:198.18.0.1]:80")
	if n, ap, e := dialTarget(syscall.AF_INET6, false, mapped); n != "tcp4" || ap != netip.MustParseAddrPort("198.18.0.1:80") || e != 0 {
		t.Errorf("dual-stack v4-mapped connect: %s %v %v", n, ap, e)
	}
	if _, _, e := dialTarget(syscall.AF_INET6, true, mapped); e != syscall.ENETUNREACH {
		t.Errorf("IPv6-only v4-mapped connect: %v, want ENETUNREACH", e)
	}
	if n, _, _ := dialTarget(syscall.AF_INET6, true, netip.MustParseAddrPort("[fd00:f5::2]:80")); n != "tcp6" {
		t.Errorf("IPv6 connect dials %s", n)
	}
}
