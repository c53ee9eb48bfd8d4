package stack

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// OwnsAddr reports whether a is an address of the stack's interface: a
// socket bound to it lives on the stack. Any other specific address
// (loopback, another interface's) belongs to the kernel.
// An IPv6 address may carry a zone (a link-local address's interface):
// the address decides.
func (s *Stack) OwnsAddr(a netip.Addr) bool { return s.ownsAddr(a.Unmap().WithZone("")) }

// Reaches reports whether a connection to dst goes through the stack: dst
// is one of its own addresses (the connection loops inside a shard), or the
// kernel routes dst out of the stack's interface. It does not for loopback
// (the stack has no loopback route), for the addresses of the host's other
// interfaces (the kernel delivers those over lo), nor for destinations the
// kernel routes through another interface. The shim hands such sockets to
// the kernel (docs/SHIM_PROTOCOL.md section 8). When the kernel has no route
// at all, Reaches says true, so the connect fails the stack's way.
//
// It asks the kernel (one netlink round trip), so the answer follows route
// changes made after the stack started; answers are kept for up to
// reachTTL, so a server connecting to the same backends pays the round
// trip about once a second per destination.
func (s *Stack) Reaches(dst netip.Addr) bool {
	dst = dst.Unmap().WithZone("")
	switch {
	case s.ownsAddr(dst):
		return true
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
	if ok, found := s.reach.get(dst); found {
		return ok
	}
	routes, err := nl.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(routes) == 0 {
		return true
	}
	ok := routes[0].LinkIndex == link.Attrs().Index
	s.reach.put(dst, ok)
	return ok
}

// reachTTL bounds how long a Reaches answer is reused.
const reachTTL = time.Second

// reachCacheMax bounds the cache; it is emptied when full.
const reachCacheMax = 4096

// reachCache holds recent Reaches answers; any goroutine.
type reachCache struct {
	mu    sync.Mutex // guards the fields below
	since time.Time  // when m was last emptied
	m     map[netip.Addr]bool
}

func (c *reachCache) get(a netip.Addr) (ok, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.since) > reachTTL {
		c.m, c.since = nil, time.Now()
	}
	ok, found = c.m[a]
	return ok, found
}

func (c *reachCache) put(a netip.Addr, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= reachCacheMax {
		c.m = make(map[netip.Addr]bool)
	}
	c.m[a] = ok
}

// clear forgets every answer (the routes changed).
func (c *reachCache) clear() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}
