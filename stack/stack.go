package stack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/fsstack/fsstack/afxdp"
)

// Stack is a running sharded stack. Its methods are safe for concurrent use.
type Stack struct {
	cfg    Config
	plan   portPlan
	shards []*shard
	dir    flowDirectory
	sys    *system // kernel-side resources: steering, netlink, sysctl

	mu        sync.Mutex // guards listeners, steered, draining, captures and closed
	listeners map[*Listener]struct{}
	steered   map[netip.AddrPort]int // listening addresses steered to the stack -> listeners
	// draining: addresses no listener holds any more whose connections
	// still live; they stay steered until the last one is gone (see
	// unsteerPort).
	draining map[netip.AddrPort]struct{}
	captures map[*Capture]struct{} // running captures (capture.go)
	closed   bool

	nextDial atomic.Uint32
	reach    reachCache // Reaches' recent answers
	claims   portClaims // Bind's reservations, for the kernel's sharing rules (bind.go)
}

// HoldTx defers the transmit kicks of every shard until the returned
// release is called: what any goroutine sends meanwhile leaves then, with
// one sendto per shard, instead of one per write. A caller about to make
// several writes in a row (the shim daemon's client loop, answering the
// sockets a shim kicked) holds for the run of them; the release must come
// soon, as other writers' frames wait for it too (up to txDeferMax per
// shard, past which a writer kicks anyway). Holds nest and may overlap.
func (s *Stack) HoldTx() (release func()) {
	for _, sh := range s.shards {
		sh.ep.held.Add(1)
	}
	return func() {
		for _, sh := range s.shards {
			sh.ep.held.Add(-1)
			sh.ep.flushTx()
		}
	}
}

// Queues returns the number of shards.
func (s *Stack) Queues() int { return len(s.shards) }

// Config returns the configuration the stack runs with, defaults filled in.
func (s *Stack) Config() Config { return s.cfg }

// Stats returns the counters of every shard.
func (s *Stack) Stats() []ShardStats {
	out := make([]ShardStats, len(s.shards))
	for i, sh := range s.shards {
		out[i] = sh.stats()
	}
	return out
}

// Listen listens on every shard (local listen tables). network is "tcp",
// "tcp4" or "tcp6"; address is "host:port" with a literal host, and port
// may be 0 to pick one. An empty host or "::" with "tcp" is every address
// of the interface, IPv6 and IPv4 (dual stack, as Linux's AF_INET6 socket
// with IPV6_V6ONLY off: an IPv4 client's address shows v4-mapped,
// ::ffff:a.b.c.d); with "tcp6" every IPv6 address only; 0.0.0.0 (or an
// empty host with "tcp4") every IPv4 address only.
func (s *Stack) Listen(network, address string) (net.Listener, error) {
	return s.listen(network, address)
}

// DialContext opens a connection from one of the shards. network is
// "tcp", "tcp4" or "tcp6"; an IPv6 address is written "[addr]:port". The
// source port comes from that shard's slice of the reserved ephemeral
// range, for either family.
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return s.dial(ctx, network, address)
}

func (s *Stack) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Stack) addListener(l *Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.listeners[l] = struct{}{}
	return nil
}

func (s *Stack) removeListener(l *Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
}

// Close stops every shard, detaches the steering program, and releases
// every socket, UMEM and kernel setting the stack changed. The kernel
// takes the traffic back as soon as the program is detached.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ls := make([]*Listener, 0, len(s.listeners))
	for l := range s.listeners {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	var errs []error
	for _, l := range ls {
		l.Close()
	}
	s.sys.stopFollowing()
	errs = append(errs, s.sys.detach())
	for _, sh := range s.shards {
		sh.closing.Store(true)
		sh.wake()
	}
	for _, sh := range s.shards {
		<-sh.stopped
		sh.st.Close()
	}
	s.closeCaptures()
	for _, sh := range s.shards {
		sh.st.Wait()
	}
	errs = append(errs, s.sys.close(s.shards))
	return errors.Join(errs...)
}

// XDPMode reports how the steering program is attached: XDPNative or
// XDPGeneric.
func (s *Stack) XDPMode() XDPMode {
	if s.sys.attached == afxdp.AttachNative {
		return XDPNative
	}
	return XDPGeneric
}
