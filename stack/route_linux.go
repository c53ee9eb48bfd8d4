package stack

import (
	"net"
	"net/netip"
)

// OwnsAddr reports whether a is an address of the stack's interface: a
// socket bound to it lives on the stack. Any other specific address
// (loopback, another interface's) belongs to the kernel.
func (s *Stack) OwnsAddr(a netip.Addr) bool { return s.ownsAddr(a.Unmap()) }

// Reaches reports whether a connection to dst goes through the stack: dst
// is one of its own addresses (the connection loops inside a shard), or the
// kernel routes dst out of the stack's interface. It does not for loopback
// (the stack has no loopback route), for the addresses of the host's other
// interfaces (the kernel delivers those over lo), nor for destinations the
// kernel routes through another interface. The shim hands such sockets to
// the kernel (docs/SHIM_PROTOCOL.md section 8). When the kernel has no route
// at all, Reaches says true, so the connect fails the stack's way.
//
// It asks the kernel (one netlink round trip per call), so the answer
// follows route changes made after the stack started.
func (s *Stack) Reaches(dst netip.Addr) bool {
	dst = dst.Unmap()
	switch {
	case s.ownsAddr(dst):
		return true
	case !dst.Is4():
		return true // the stack refuses it itself
	case dst.IsLoopback() || dst.IsUnspecified():
		return false
	}
	if s.isClosed() {
		return true
	}
	sys := s.sys
	nl, link := sys.nl, sys.link
	if nl == nil || link == nil {
		return true
	}
	routes, err := nl.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(routes) == 0 {
		return true
	}
	return routes[0].LinkIndex == link.Attrs().Index
}
