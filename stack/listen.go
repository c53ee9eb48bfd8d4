package stack

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Listener is a listening socket spread over every shard: one netstack
// listener per shard, each with its own accept queue (Fastsocket's local
// listen table). Accept takes from any shard; AcceptFrom prefers one.
type Listener struct {
	s    *Stack
	addr netip.AddrPort // local address; unspecified address = every address
	// dual marks a dual-stack listener ([::] with IPV6_V6ONLY off): it
	// serves IPv4 clients too, whose addresses it shows v4-mapped.
	dual  bool
	eps   []tcpip.Endpoint
	wqs   []*waiter.Queue
	ents  []waiter.Entry
	ready chan struct{} // one token: some shard's accept queue became readable
	next  atomic.Uint32 // round-robin start for Accept

	queued   atomic.Int64  // connections queued by netstack and not yet accepted
	arrivals chan struct{} // one token: a connection was queued (for Arrivals)

	closeOnce sync.Once
	closed    chan struct{}
	claim     *portClaim // from the Bound it listens on (bind.go); nil for Stack.Listen's
}

var _ net.Listener = (*Listener)(nil)

func (s *Stack) listen(network, address string) (*Listener, error) {
	ap, dual, err := parseListenAddr(network, address)
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	if s.isClosed() {
		return nil, &net.OpError{Op: "listen", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: ErrClosed}
	}
	if err := s.checkLocal(ap); err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	n := len(s.shards)
	eps := make([]tcpip.Endpoint, n)
	wqs := make([]*waiter.Queue, n)
	port := ap.Port()
	fail := func(err error) (*Listener, error) {
		closeAll(eps)
		return nil, &net.OpError{Op: "listen", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	for q, sh := range s.shards {
		wq := new(waiter.Queue)
		ep, terr := sh.st.NewEndpoint(tcp.ProtocolNumber, netProto(ap.Addr()), wq)
		if terr != nil {
			return fail(translate(terr))
		}
		eps[q], wqs[q] = ep, wq
		ep.SocketOptions().SetReuseAddress(true)
		if !ap.Addr().Is4() {
			// A dual-stack endpoint takes IPv4 segments through
			// netstack's v4-mapped handling, as Linux with
			// IPV6_V6ONLY off.
			ep.SocketOptions().SetV6Only(!dual)
		}
		if terr := ep.Bind(fullAddr(ap.Addr(), port)); terr != nil {
			return fail(translate(terr))
		}
		if port == 0 {
			// The first shard picked a port; the others take the same.
			la, terr := ep.GetLocalAddress()
			if terr != nil {
				return fail(translate(terr))
			}
			port = la.Port
		}
	}
	l, err := s.listenOn(netip.AddrPortFrom(ap.Addr(), port), dual, eps, wqs, shardBacklog(n))
	if err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	return l, nil
}

// checkLocal checks that ap may be a local address of a socket: an
// address of the interface (or unspecified), and a port outside the range
// reserved for active opens (or 0).
func (s *Stack) checkLocal(ap netip.AddrPort) error {
	if !ap.Addr().IsUnspecified() && !s.ownsAddr(ap.Addr()) {
		return fmt.Errorf("address %s is not on %s: %w", ap.Addr(), s.cfg.Interface, errnoAddrNotAvail)
	}
	if _, ok := s.plan.owner(ap.Port()); ok && ap.Port() != 0 {
		return fmt.Errorf("port %d is inside fsstack's reserved ephemeral range %s: %w", ap.Port(), s.cfg.EphemeralPorts, errnoAddrInUse)
	}
	return nil
}

// fullAddr is the netstack address of a local (addr, port); an
// unspecified addr is every address of the interface.
func fullAddr(a netip.Addr, port uint16) tcpip.FullAddress {
	full := tcpip.FullAddress{NIC: nicID, Port: port}
	if !a.IsUnspecified() {
		full.Addr = tcpipAddr(a)
	}
	return full
}

// closeAll closes the non-nil endpoints of eps.
func closeAll(eps []tcpip.Endpoint) {
	for q, ep := range eps {
		if ep != nil {
			ep.Close()
			eps[q] = nil
		}
	}
}

// listenOn makes a Listener of one bound endpoint per shard: each listens
// with backlog, the port is steered to the stack, and the stack knows the
// listener (Close closes it). On error it closes the endpoints.
func (s *Stack) listenOn(addr netip.AddrPort, dual bool, eps []tcpip.Endpoint, wqs []*waiter.Queue, backlog int) (*Listener, error) {
	l := &Listener{s: s, addr: addr, dual: dual, eps: eps, wqs: wqs, ents: make([]waiter.Entry, len(eps)),
		ready: make(chan struct{}, 1), arrivals: make(chan struct{}, 1), closed: make(chan struct{})}
	for q, ep := range eps {
		if terr := ep.Listen(backlog); terr != nil {
			l.closeEndpoints()
			return nil, translate(terr)
		}
		l.ents[q] = waiter.NewFunctionEntry(waiter.ReadableEvents|waiter.EventHUp, func(m waiter.EventMask) {
			if m == waiter.ReadableEvents {
				// netstack notifies exactly this once per connection
				// it queues (a close adds EventHUp).
				l.queued.Add(1)
				select {
				case l.arrivals <- struct{}{}:
				default:
				}
			}
			select {
			case l.ready <- struct{}{}:
			default:
			}
		})
		wqs[q].EventRegister(&l.ents[q])
	}
	steers := l.steers()
	for i, a := range steers {
		if err := s.steerPort(a); err != nil {
			for _, b := range steers[:i] {
				s.unsteerPort(b)
			}
			l.closeEndpoints()
			return nil, fmt.Errorf("steer port %d: %w", addr.Port(), err)
		}
	}
	if err := s.addListener(l); err != nil {
		for _, a := range steers {
			s.unsteerPort(a)
		}
		l.closeEndpoints()
		return nil, err
	}
	return l, nil
}

// steers returns the steering entries the listener holds: its address,
// and for a dual-stack listener the port on every IPv4 and every IPv6
// address.
func (l *Listener) steers() []netip.AddrPort {
	if l.dual {
		return []netip.AddrPort{netip.AddrPortFrom(netip.IPv4Unspecified(), l.addr.Port()), netip.AddrPortFrom(netip.IPv6Unspecified(), l.addr.Port())}
	}
	return []netip.AddrPort{l.addr}
}

// steerPort has the steering program send segments for addr to the
// stack. Listeners sharing a port (SO_REUSEPORT) count references, so
// closing one keeps the port steered for the others.
func (s *Stack) steerPort(addr netip.AddrPort) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.steered[addr] == 0 {
		if _, ok := s.draining[addr]; ok {
			delete(s.draining, addr) // still steered
		} else if err := s.sys.steering.AddPort(addr.Addr(), addr.Port()); err != nil {
			return err
		}
	}
	s.steered[addr]++
	return nil
}

// liveOn reports whether any shard has a connection on addr (any local
// address of addr's family when addr's is unspecified), TIME_WAIT
// included. It asks the shards' netstacks rather than the flow directory,
// which does not record every connection: a SYN that found its shard's
// claim table full is served unrecorded, and a claim whose connection sits
// in TIME_WAIT may be forgotten.
func (s *Stack) liveOn(addr netip.AddrPort) bool {
	for _, sh := range s.shards {
		if sh.liveOn(addr) {
			return true
		}
	}
	return false
}

// unsteerPort drops one reference taken by steerPort. When the last
// listener of addr is gone, connections it accepted may still live (a
// server that stops listening and finishes its requests: haproxy's soft
// stop, nginx's graceful quit): their segments must keep coming to the
// stack, or the kernel answers them with resets. So the port stays
// steered, draining, until no shard has a connection on it any more
// (sweepDraining). New SYNs to a draining port reach the stack, which
// refuses them as the kernel would with nothing listening.
func (s *Stack) unsteerPort(addr netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.steered[addr]--; s.steered[addr] > 0 {
		return
	}
	delete(s.steered, addr)
	if s.liveOn(addr) {
		s.draining[addr] = struct{}{}
		return
	}
	_ = s.sys.steering.DelPort(addr.Addr(), addr.Port())
}

// sweepDraining gives the kernel back the draining ports whose last
// connection is gone (TIME_WAIT included). Shard 0 calls it from its
// housekeeping, once a second.
func (s *Stack) sweepDraining() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.draining) == 0 {
		return
	}
	for addr := range s.draining {
		if !s.liveOn(addr) {
			delete(s.draining, addr)
			_ = s.sys.steering.DelPort(addr.Addr(), addr.Port())
		}
	}
}

// Accept waits for and returns the next connection from any shard.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptFrom(-1)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptFrom returns a connection, taking first from shard preferred's
// accept queue and from the others only when it is empty, so no
// connection is stranded on a shard nobody prefers. preferred < 0 rotates
// the starting shard.
func (l *Listener) AcceptFrom(preferred int) (*Conn, error) {
	for {
		c, err := l.TryAcceptFrom(preferred)
		if !errors.Is(err, syscall.EAGAIN) {
			return c, err
		}
		select {
		case <-l.ready:
		case <-l.closed:
			return nil, l.opError(net.ErrClosed)
		}
	}
}

// TryAcceptFrom is AcceptFrom without waiting: when no shard has a
// connection queued it fails at once with an error matching
// syscall.EAGAIN. With it and Queued, a caller can serve accept(2) from
// netstack's own queues, so the listen backlog is netstack's alone.
func (l *Listener) TryAcceptFrom(preferred int) (*Conn, error) {
	select {
	case <-l.closed:
		return nil, l.opError(net.ErrClosed)
	default:
	}
	n := len(l.eps)
	start := preferred
	if start < 0 || start >= n {
		start = int(l.next.Add(1)) % n
	}
	for i := 0; i < n; i++ {
		q := (start + i) % n
		ep, wq, terr := l.eps[q].Accept(nil)
		if terr == nil {
			l.queued.Add(-1)
			c := newConn(l.s.shards[q], ep, wq)
			c.mapped = l.dual
			return c, nil
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			select {
			case <-l.closed:
				return nil, l.opError(net.ErrClosed)
			default:
			}
			return nil, l.opError(translate(terr))
		}
	}
	return nil, l.opError(syscall.EAGAIN)
}

// Queued returns how many connections the shards hold ready for Accept.
func (l *Listener) Queued() int {
	return int(max(l.queued.Load(), 0)) // an Accept may count before the arrival does
}

// Arrivals returns a channel that receives a token (one pending at most)
// when a shard queues a connection, and Closed one that is closed when
// the listener is.
func (l *Listener) Arrivals() <-chan struct{} { return l.arrivals }

// Closed returns a channel closed when the listener is.
func (l *Listener) Closed() <-chan struct{} { return l.closed }

// SetBacklog sets every shard's accept queue to hold backlog+1 completed
// connections, as Linux's listen(2) does (a second listen changes it
// there too). Handshakes beyond it wait: their SYNs are dropped.
func (l *Listener) SetBacklog(backlog int) error {
	for _, ep := range l.eps {
		if ep == nil {
			return net.ErrClosed
		}
		if terr := ep.Listen(max(backlog, 0) + 1); terr != nil {
			return translate(terr)
		}
	}
	return nil
}

func (l *Listener) opError(err error) error {
	return &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: err}
}

// Close stops listening on every shard. Connections already accepted are
// not affected.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		for _, a := range l.steers() {
			l.s.unsteerPort(a)
		}
		l.closeEndpoints()
		l.s.claims.remove(l.claim)
		l.s.removeListener(l)
	})
	return nil
}

func (l *Listener) closeEndpoints() {
	for q, ep := range l.eps {
		if ep == nil {
			continue
		}
		if l.wqs[q] != nil && l.ents[q] != (waiter.Entry{}) {
			l.wqs[q].EventUnregister(&l.ents[q])
		}
		ep.Close()
		l.eps[q] = nil
	}
}

// SetDeferAccept sets TCP_DEFER_ACCEPT on every shard's listener: a
// connection is queued for Accept only once its first data arrives (or,
// as on Linux, when d has passed). d == 0 turns it off.
func (l *Listener) SetDeferAccept(d time.Duration) error {
	opt := tcpip.TCPDeferAcceptOption(d)
	for _, ep := range l.eps {
		if ep == nil {
			return net.ErrClosed
		}
		if terr := ep.SetSockOpt(&opt); terr != nil {
			return translate(terr)
		}
	}
	return nil
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.addr) }

// Shards returns how many per-shard accept queues the listener has.
func (l *Listener) Shards() int { return len(l.eps) }

func (s *Stack) ownsAddr(a netip.Addr) bool {
	for _, p := range s.sys.ownAddrs() {
		if p.Addr() == a {
			return true
		}
	}
	return false
}

// parseListenAddr parses "host:port" for a TCP network. Hostnames are not
// resolved here; listen addresses must be literal. dual reports a
// dual-stack listener: "tcp" with an empty host or "::" serves IPv6 and
// IPv4 (as Linux's AF_INET6 socket with IPV6_V6ONLY off, and Go's
// net.Listen); "tcp6" serves IPv6 only, "tcp4" and any IPv4 address
// (0.0.0.0 included) IPv4 only.
func parseListenAddr(network, address string) (ap netip.AddrPort, dual bool, err error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return ap, false, fmt.Errorf("network %q not supported (use tcp, tcp4 or tcp6): %w", network, net.UnknownNetworkError(network))
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return ap, false, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return ap, false, fmt.Errorf("bad port %q", portStr)
	}
	var addr netip.Addr
	switch {
	case host == "" && network == "tcp4":
		addr = netip.IPv4Unspecified()
	case host == "":
		addr = netip.IPv6Unspecified()
	default:
		a, err := netip.ParseAddr(host)
		if err != nil {
			return ap, false, fmt.Errorf("address %q is not a literal IP address", host)
		}
		a = a.WithZone("") // a link-local address's zone: fsstack has one interface
		if a.Is4In6() {
			if network == "tcp6" {
				return ap, false, fmt.Errorf("address %s is v4-mapped; listen on its IPv4 address with tcp or tcp4", a)
			}
			a = a.Unmap()
		}
		switch {
		case network == "tcp4" && !a.Is4():
			return ap, false, fmt.Errorf("address %s is not an IPv4 address (use tcp6 or tcp)", a)
		case network == "tcp6" && a.Is4():
			return ap, false, fmt.Errorf("address %s is not an IPv6 address (use tcp4 or tcp)", a)
		}
		addr = a
	}
	dual = network == "tcp" && addr == netip.IPv6Unspecified()
	return netip.AddrPortFrom(addr, uint16(port)), dual, nil
}

// Conn is a TCP connection on one shard. It behaves as net.TCPConn does:
// deadlines, CloseRead and CloseWrite (half-close), SetLinger,
// SetKeepAlive, SetKeepAlivePeriod and SetNoDelay.
type Conn struct {
	ep    tcpip.Endpoint
	wq    *waiter.Queue
	shard *shard
	// mapped: accepted by a dual-stack listener, so an IPv4 connection's
	// addresses show v4-mapped (16 bytes), as on a Linux AF_INET6 socket.
	mapped bool
	// sndGrant is the send buffer drawn from the stack's budget
	// (sndbuf.go), given back at Close.
	sndGrant atomic.Int64
	// rx and tx are the read and write directions (conn.go); closed is
	// set by Close.
	rx, tx connDir
	closed atomic.Bool
	// wr feeds Write's bytes to netstack (guarded by tx.mu): one per
	// call would be an allocation per write.
	wr bytes.Reader
	// wf is TryWriteFrom's payload (guarded by tx.mu), for the same reason.
	wf readerPayload
	// laddr and raddr are the addresses once asked for: they do not
	// change once connected, and every error of a Read or Write names
	// them (as net.TCPConn, which also returns the same values).
	laddr, raddr atomic.Pointer[net.TCPAddr]
}

var _ net.Conn = (*Conn)(nil)

func newConn(sh *shard, ep tcpip.Endpoint, wq *waiter.Queue) *Conn {
	ep.SocketOptions().SetDelayOption(false) // TCP_NODELAY as Go's net does by default
	c := &Conn{ep: ep, wq: wq, shard: sh}
	c.initDirs()
	c.sizeSendBuffer()
	return c
}

// WaitReset blocks until the connection fails — a reset from the peer, or
// a retransmission or keep-alive timeout — and returns why, or returns nil
// once stop is closed. The error matches (errors.Is) the errno the kernel
// would report: EPIPE for a reset that arrives after the peer's FIN while
// this side still may write (CLOSE_WAIT), ECONNRESET for one before it,
// ETIMEDOUT for a timeout. After the peer's FIN a Read reports only io.EOF
// and keeps reporting it, so this is the one way to learn of such a reset
// before a write fails, as the kernel reports it with POLLERR at once.
func (c *Conn) WaitReset(stop <-chan struct{}) error {
	entry, ch := waiter.NewChannelEntry(waiter.EventHUp | waiter.EventErr)
	c.wq.EventRegister(&entry)
	defer c.wq.EventUnregister(&entry)
	for {
		if err := c.ResetError(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-stop:
			return nil
		}
	}
}

// ResetError is WaitReset without the wait: the error if the connection
// has failed, nil if it has not (yet). A caller that learns of changes
// through Notify asks it after each. It reports a failure once: netstack
// hands its last error over to the first caller that asks.
func (c *Conn) ResetError() error {
	switch tcp.EndpointState(c.ep.State()) {
	case tcp.StateError:
		if terr := c.ep.LastError(); terr != nil {
			return translate(terr)
		}
		return translate(&tcpip.ErrConnectionReset{})
	case tcp.StateClose:
		// netstack closes a connection reset in CLOSE_WAIT with
		// ErrAborted (EPIPE), as Linux does; a graceful close has no
		// error.
		if terr := c.ep.LastError(); terr != nil {
			return translate(terr)
		}
	}
	return nil
}

// Shard returns the index of the shard that owns the connection.
func (c *Conn) Shard() int { return c.shard.id }

// SetLinger sets what Close does with unsent data, as net.TCPConn's
// SetLinger: sec < 0 (the default) sends it in the background, sec == 0
// discards it and resets the connection, sec > 0 waits up to sec seconds.
func (c *Conn) SetLinger(sec int) error {
	opt := tcpip.LingerOption{}
	if sec >= 0 {
		opt = tcpip.LingerOption{Enabled: true, Timeout: time.Duration(sec) * time.Second}
	}
	c.ep.SocketOptions().SetLinger(opt)
	return nil
}

// SetKeepAlive turns TCP keep-alive probes on or off.
func (c *Conn) SetKeepAlive(on bool) error {
	c.ep.SocketOptions().SetKeepAlive(on)
	return nil
}

// SetKeepAlivePeriod sets the idle time before the first probe and the
// interval between probes, as net.TCPConn's does.
func (c *Conn) SetKeepAlivePeriod(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("keep-alive period %v: %w", d, syscall.EINVAL)
	}
	idle := tcpip.KeepaliveIdleOption(d)
	if terr := c.ep.SetSockOpt(&idle); terr != nil {
		return translate(terr)
	}
	intv := tcpip.KeepaliveIntervalOption(d)
	if terr := c.ep.SetSockOpt(&intv); terr != nil {
		return translate(terr)
	}
	return nil
}

// SetNoDelay turns Nagle's algorithm off (true, the default) or on.
func (c *Conn) SetNoDelay(noDelay bool) error {
	c.ep.SocketOptions().SetDelayOption(!noDelay)
	return nil
}
