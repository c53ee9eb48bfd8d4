package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// BindOptions are the socket options and credentials that decide, as for
// bind(2), whether a port may be taken and an address another socket holds
// shared.
type BindOptions struct {
	ReuseAddr bool // SO_REUSEADDR
	ReusePort bool // SO_REUSEPORT
	// Owner is the uid that owns the socket (the kernel's socket uid, the
	// effective uid of the process that created it): SO_REUSEPORT shares
	// a port only between sockets of one owner. 0 (root) if not set.
	Owner uint32
	// Unprivileged says the caller lacks CAP_NET_BIND_SERVICE: a port
	// below the namespace's net.ipv4.ip_unprivileged_port_start fails with
	// EACCES. False (the zero value) binds any port, as root does.
	Unprivileged bool
}

// Bound is a local address reserved on every shard, as bind(2) reserves
// one before listen or connect. Listen or DialContext consume it; Close
// releases it otherwise.
type Bound struct {
	s     *Stack
	addr  netip.AddrPort
	claim *portClaim // in s.claims until Close, DialContext or the listener's Close
	mu    sync.Mutex
	eps   []tcpip.Endpoint // one bound endpoint per shard; nil once consumed
	wqs   []*waiter.Queue
}

// bindAttempts bounds the retries of a port-0 bind whose port, picked by
// one shard, is taken on another.
const bindAttempts = 8

// Bind reserves addr (an IPv4 address of the interface or 0.0.0.0, and a
// port, 0 to pick one) on every shard with the kernel's rules for sharing:
// a port another socket holds on the same address or on the wildcard
// (0.0.0.0 overlaps every address) fails with EADDRINUSE unless both set
// SO_REUSEADDR and the other does not listen, or both set SO_REUSEPORT and
// have one owner (portClaim.conflicts); an address that is not the
// interface's fails with EADDRNOTAVAIL, then a port below
// ip_unprivileged_port_start with EACCES if opts.Unprivileged. A picked port
// comes from one shard's slice of the reserved ephemeral range (shards
// take turns), so a connection from it is that shard's.
func (s *Stack) Bind(addr netip.AddrPort, opts BindOptions) (*Bound, error) {
	a := addr.Addr().Unmap()
	opErr := func(err error) error {
		return &net.OpError{Op: "bind", Net: "tcp4", Addr: net.TCPAddrFromAddrPort(addr), Err: err}
	}
	if !a.Is4() {
		return nil, opErr(errors.New("Bind serves IPv4 only (IPv6 is served by Listen and DialContext)"))
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
	if opts.Unprivileged && addr.Port() != 0 {
		start, err := s.UnprivilegedPortStart()
		if err != nil {
			return nil, opErr(err)
		}
		if int(addr.Port()) < start {
			return nil, opErr(fmt.Errorf("port %d is below ip_unprivileged_port_start %d and the caller lacks CAP_NET_BIND_SERVICE: %w",
				addr.Port(), start, syscall.EACCES))
		}
	}
	var err error
	for range bindAttempts {
		var b *Bound
		b, err = s.bindClaimed(addr, opts)
		if err == nil {
			return b, nil
		}
		if addr.Port() != 0 || !errors.Is(err, errnoAddrInUse) {
			break
		}
	}
	return nil, opErr(err)
}

// bindClaimed binds with bindOnce under the claims' lock and records the
// claim, unless the kernel's rules refuse what netstack allowed.
func (s *Stack) bindClaimed(addr netip.AddrPort, opts BindOptions) (*Bound, error) {
	s.claims.mu.Lock()
	defer s.claims.mu.Unlock()
	c := &portClaim{addr: addr.Addr(), port: addr.Port(), opts: opts}
	if c.port != 0 && s.claims.conflictLocked(c) {
		return nil, errnoAddrInUse
	}
	b, err := s.bindOnce(addr, opts)
	if err != nil {
		return nil, err
	}
	c.port = b.addr.Port()
	if s.claims.conflictLocked(c) { // a picked port another owner's SO_REUSEPORT group holds
		b.Close()
		return nil, errnoAddrInUse
	}
	s.claims.addLocked(c)
	b.claim = c
	return b, nil
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
	cl := &b.s.claims
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if b.claim != nil {
		// As the kernel's listen(2), check the port again: a socket that
		// shared it through SO_REUSEADDR may not listen beside a listener.
		b.claim.listening = true
		if cl.conflictLocked(b.claim) {
			b.claim.listening = false
			return nil, &net.OpError{Op: "listen", Net: "tcp4", Addr: net.TCPAddrFromAddrPort(b.addr), Err: errnoAddrInUse}
		}
	}
	eps, wqs, err := b.take()
	if err != nil {
		if b.claim != nil {
			b.claim.listening = false
		}
		return nil, err
	}
	l, err := b.s.listenOn(b.addr, false, eps, wqs, max(backlog, 0)+1)
	if err != nil {
		cl.removeLocked(b.claim)
		return nil, &net.OpError{Op: "listen", Net: "tcp4", Addr: net.TCPAddrFromAddrPort(b.addr), Err: err}
	}
	l.claim = b.claim
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
	s.claims.remove(b.claim)
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp4", Source: net.TCPAddrFromAddrPort(b.addr), Addr: net.TCPAddrFromAddrPort(raddr), Err: err}
	}
	ra := raddr.Addr().Unmap()
	if !ra.Is4() {
		closeAll(eps)
		return nil, opErr(errors.New("a Bound dials IPv4 only (IPv6 is served by Stack.DialContext)"))
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
	b.s.claims.remove(b.claim)
	closeAll(eps)
	return nil
}

// portClaims are the addresses reserved with Bind, by port. netstack's
// port table shares a port more freely than Linux: it lets a wildcard
// bind sit beside a specific one and SO_REUSEADDR join a listener, and it
// has no owners for SO_REUSEPORT. Bind and Listen check the claims with
// the kernel's rules first. Sockets the claims do not hold (Stack.Listen's
// listeners, connections) are left to netstack's rules.
//
// BUG(issue 9): a Bound consumed by DialContext drops its claim, so a
// connected socket does not keep another owner out of its SO_REUSEPORT
// port as the kernel's does.
//
// Lock order: mu before Stack.mu (Bound.Listen holds mu across listenOn).
type portClaims struct {
	mu     sync.Mutex
	byPort map[uint16][]*portClaim // +checklocks:mu
}

// portClaim is one reserved address. Its fields change only under the
// claims' mu.
type portClaim struct {
	addr      netip.Addr
	port      uint16
	opts      BindOptions
	listening bool
}

// conflicts reports whether c may not hold its port beside o, as the
// kernel decides for bind(2) and listen(2) of c (inet_bind_conflict with
// relaxed SO_REUSEADDR checks): the addresses overlap (equal, or either is
// the wildcard), and neither do both set SO_REUSEADDR with o not listening
// nor do both set SO_REUSEPORT with one owner.
func (c *portClaim) conflicts(o *portClaim) bool {
	if c.port != o.port || !(c.addr == o.addr || c.addr.IsUnspecified() || o.addr.IsUnspecified()) {
		return false
	}
	if c.opts.ReuseAddr && o.opts.ReuseAddr && !o.listening {
		return false
	}
	return !c.opts.ReusePort || !o.opts.ReusePort || c.opts.Owner != o.opts.Owner
}

func (cl *portClaims) conflictLocked(c *portClaim) bool {
	for _, o := range cl.byPort[c.port] {
		if o != c && c.conflicts(o) {
			return true
		}
	}
	return false
}

func (cl *portClaims) addLocked(c *portClaim) {
	if cl.byPort == nil {
		cl.byPort = make(map[uint16][]*portClaim)
	}
	cl.byPort[c.port] = append(cl.byPort[c.port], c)
}

func (cl *portClaims) removeLocked(c *portClaim) {
	if c == nil {
		return
	}
	list := cl.byPort[c.port]
	for i, o := range list {
		if o == c {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(cl.byPort, c.port)
	} else {
		cl.byPort[c.port] = list
	}
}

// remove drops c (nil: nothing).
func (cl *portClaims) remove(c *portClaim) {
	if c == nil {
		return
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.removeLocked(c)
}
