package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// BindOptions are the socket options that decide, as for bind(2), whether
// an address another socket holds may be shared.
type BindOptions struct {
	ReuseAddr bool // SO_REUSEADDR
	ReusePort bool // SO_REUSEPORT
}

// Bound is a local address reserved on every shard, as bind(2) reserves
// one before listen or connect. Listen or DialContext consume it; Close
// releases it otherwise.
type Bound struct {
	s    *Stack
	addr netip.AddrPort
	mu   sync.Mutex
	eps  []tcpip.Endpoint // one bound endpoint per shard; nil once consumed
	wqs  []*waiter.Queue
}

// bindAttempts bounds the retries of a port-0 bind whose port, picked by
// one shard, is taken on another.
const bindAttempts = 8

// Bind reserves addr (an IPv4 address of the interface or 0.0.0.0, and a
// port, 0 to pick one) on every shard with the kernel's rules for sharing:
// a port another socket holds fails with EADDRINUSE unless both set
// SO_REUSEADDR and neither listens, or both set SO_REUSEPORT; an address
// that is not the interface's fails with EADDRNOTAVAIL. A picked port
// comes from one shard's slice of the reserved ephemeral range (shards
// take turns), so a connection from it is that shard's.
func (s *Stack) Bind(addr netip.AddrPort, opts BindOptions) (*Bound, error) {
	a := addr.Addr().Unmap()
	opErr := func(err error) error {
		return &net.OpError{Op: "bind", Net: "tcp4", Addr: net.TCPAddrFromAddrPort(addr), Err: err}
	}
	if !a.Is4() {
		return nil, opErr(errors.New("fsstack serves IPv4 only"))
	}
	addr = netip.AddrPortFrom(a, addr.Port())
	if s.isClosed() {
		return nil, opErr(ErrClosed)
	}
	// Unlike Listen, an explicit port inside the reserved range is
	// allowed, as the kernel allows binding a reserved port by number:
	// a server that bound port 0 and restarts binds the port it got.
	if err := s.checkLocal(netip.AddrPortFrom(a, 0)); err != nil {
		return nil, opErr(err)
	}
	var err error
	for range bindAttempts {
		var b *Bound
		b, err = s.bindOnce(addr, opts)
		if err == nil {
			return b, nil
		}
		if addr.Port() != 0 || !errors.Is(err, errnoAddrInUse) {
			break
		}
	}
	return nil, opErr(err)
}

// bindOnce binds one endpoint per shard, starting with the next shard in
// turn, which picks the port if addr's is 0.
func (s *Stack) bindOnce(addr netip.AddrPort, opts BindOptions) (*Bound, error) {
	n := len(s.shards)
	b := &Bound{s: s, eps: make([]tcpip.Endpoint, n), wqs: make([]*waiter.Queue, n)}
	first := int(s.nextDial.Add(1)) % n
	port := addr.Port()
	for i := range n {
		q := (first + i) % n
		wq := new(waiter.Queue)
		ep, terr := s.shards[q].st.NewEndpoint(tcp.ProtocolNumber, header.IPv4ProtocolNumber, wq)
		if terr != nil {
			closeAll(b.eps)
			return nil, translate(terr)
		}
		b.eps[q], b.wqs[q] = ep, wq
		ep.SocketOptions().SetReuseAddress(opts.ReuseAddr)
		ep.SocketOptions().SetReusePort(opts.ReusePort)
		if terr := ep.Bind(fullAddr(addr.Addr(), port)); terr != nil {
			closeAll(b.eps)
			return nil, translate(terr)
		}
		if port == 0 {
			la, terr := ep.GetLocalAddress()
			if terr != nil {
				closeAll(b.eps)
				return nil, translate(terr)
			}
			port = la.Port
		}
	}
	b.addr = netip.AddrPortFrom(addr.Addr(), port)
	return b, nil
}

// Addr returns the reserved address (with the picked port).
func (b *Bound) Addr() netip.AddrPort { return b.addr }

// take hands the endpoints to one consumer.
func (b *Bound) take() ([]tcpip.Endpoint, []*waiter.Queue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	eps, wqs := b.eps, b.wqs
	b.eps, b.wqs = nil, nil
	if eps == nil {
		return nil, nil, net.ErrClosed
	}
	return eps, wqs, nil
}

// Listen listens on the reserved address, on every shard, with the
// kernel's backlog semantics: each shard's accept queue holds backlog+1
// completed connections, as Linux's holds backlog+1.
func (b *Bound) Listen(backlog int) (net.Listener, error) {
	eps, wqs, err := b.take()
	if err != nil {
		return nil, err
	}
	l, err := b.s.listenOn(b.addr, eps, wqs, max(backlog, 0)+1)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp4", Addr: net.TCPAddrFromAddrPort(b.addr), Err: err}
	}
	return l, nil
}

// DialContext connects from the reserved address to raddr. A connection to
// one of the stack's own addresses loops inside the loopback shard, as
// with Stack.DialContext. Any other belongs to the shard whose slice of the
// ephemeral range holds the port (a picked port); from a port outside the
// range only the stack's own addresses can be reached, since replies from
// the wire to it could not be steered to a shard.
func (b *Bound) DialContext(ctx context.Context, raddr netip.AddrPort) (net.Conn, error) {
	eps, wqs, err := b.take()
	if err != nil {
		return nil, err
	}
	s := b.s
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp4", Source: net.TCPAddrFromAddrPort(b.addr), Addr: net.TCPAddrFromAddrPort(raddr), Err: err}
	}
	ra := raddr.Addr().Unmap()
	if !ra.Is4() {
		closeAll(eps)
		return nil, opErr(errors.New("fsstack serves IPv4 only"))
	}
	raddr = netip.AddrPortFrom(ra, raddr.Port())
	q, ok := s.plan.owner(b.addr.Port())
	switch {
	case s.ownsAddr(ra):
		q = loopbackShard // see Stack.DialContext
	case !ok:
		closeAll(eps)
		return nil, opErr(fmt.Errorf("connect from port %d, outside the reserved range %s, to a remote address is not supported: %w",
			b.addr.Port(), s.cfg.EphemeralPorts, errnoAddrNotAvail))
	}
	ep, wq := eps[q], wqs[q]
	eps[q] = nil
	closeAll(eps)
	sh := s.shards[q]
	if !s.ownsAddr(ra) {
		if err := s.resolveNextHop(ctx, sh, tcpip.AddrFrom4(ra.As4())); err != nil {
			ep.Close()
			return nil, opErr(err)
		}
	}
	c, err := s.connect(ctx, sh, ep, wq, raddr)
	if err != nil {
		return nil, opErr(err)
	}
	return c, nil
}

// Close releases the reservation unless Listen or DialContext took it.
func (b *Bound) Close() error {
	eps, _, err := b.take()
	if err != nil {
		return nil
	}
	closeAll(eps)
	return nil
}
