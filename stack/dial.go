package stack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// loopbackShard is the shard of every connection to one of the stack's own
// addresses. Such a connection loops inside one shard's netstack (both
// ends live there), and keeping them all on one shard, as the kernel's lo
// is one device, keeps their order: a listener's Accept takes them in the
// order they were made, as the kernel's does, instead of shard by shard.
const loopbackShard = 0

// neighbourWait bounds how long a dial waits for the kernel to resolve the
// next hop's link address.
const neighbourWait = 3 * time.Second

func (s *Stack) dial(ctx context.Context, network, address string) (net.Conn, error) {
	opErr := func(addr net.Addr, err error) error {
		return &net.OpError{Op: "dial", Net: network, Addr: addr, Err: err}
	}
	resolveNet := "ip"
	switch network {
	case "tcp":
	case "tcp4":
		resolveNet = "ip4"
	case "tcp6":
		resolveNet = "ip6"
	default:
		return nil, opErr(nil, net.UnknownNetworkError(network))
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, opErr(nil, err)
	}
	port, err := net.DefaultResolver.LookupPort(ctx, "tcp", portStr)
	if err != nil {
		return nil, opErr(nil, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(ctx, resolveNet, host)
		if lerr != nil {
			return nil, opErr(nil, lerr)
		}
		ip = ips[0]
	}
	if ip.Zone() != "" && ip.Zone() != s.cfg.Interface {
		return nil, opErr(nil, fmt.Errorf("zone %q is not fsstack's interface %s: %w", ip.Zone(), s.cfg.Interface, errnoHostUnreach))
	}
	ip = ip.Unmap().WithZone("")
	switch {
	case network == "tcp4" && !ip.Is4():
		return nil, opErr(nil, fmt.Errorf("%s is not an IPv4 address (use tcp6)", ip))
	case network == "tcp6" && ip.Is4():
		return nil, opErr(nil, fmt.Errorf("%s is not an IPv6 address (use tcp4)", ip))
	}
	raddr := net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port)))
	if s.isClosed() {
		return nil, opErr(raddr, ErrClosed)
	}

	var sh *shard
	if s.ownsAddr(ip) {
		sh = s.shards[loopbackShard]
	} else {
		sh = s.shards[int(s.nextDial.Add(1))%len(s.shards)]
		if err := s.resolveNextHop(ctx, sh, tcpipAddr(ip)); err != nil {
			return nil, opErr(raddr, err)
		}
	}

	wq := new(waiter.Queue)
	ep, terr := sh.st.NewEndpoint(tcp.ProtocolNumber, netProto(ip), wq)
	if terr != nil {
		return nil, opErr(raddr, translate(terr))
	}
	c, err := s.connect(ctx, sh, ep, wq, netip.AddrPortFrom(ip, uint16(port)))
	if err != nil {
		return nil, opErr(raddr, err)
	}
	return c, nil
}

// connect connects ep, a new or bound endpoint of shard sh, to raddr and
// waits for the handshake. On error it closes ep.
func (s *Stack) connect(ctx context.Context, sh *shard, ep tcpip.Endpoint, wq *waiter.Queue, raddr netip.AddrPort) (*Conn, error) {
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	terr := ep.Connect(tcpip.FullAddress{NIC: nicID, Addr: tcpipAddr(raddr.Addr()), Port: raddr.Port()})
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, translate(terr)
	}
	sh.connected.Add(1)
	if s.ownsAddr(raddr.Addr()) {
		s.awaitPassiveSide(sh, ep, raddr)
	}
	return newConn(sh, ep, wq), nil
}

// passiveWait bounds how long an own-address connect waits for the other
// end to be queued on its listener.
const passiveWait = 50 * time.Millisecond

// awaitPassiveSide returns once the listening side of a connection to one
// of the stack's own addresses has been queued for accept (or after
// passiveWait). The kernel completes both ends of a loopback handshake
// before connect returns; netstack finishes the passive end on one of its
// processor goroutines a moment after the active end, so without this two
// connections made one after the other could reach the accept queue in
// the other order.
func (s *Stack) awaitPassiveSide(sh *shard, ep tcpip.Endpoint, raddr netip.AddrPort) {
	la, terr := ep.GetLocalAddress()
	if terr != nil {
		return
	}
	id := gstack.TransportEndpointID{
		LocalPort:     raddr.Port(),
		LocalAddress:  tcpipAddr(raddr.Addr()),
		RemotePort:    la.Port,
		RemoteAddress: la.Addr,
	}
	deadline := time.Now().Add(passiveWait)
	for {
		e, ok := sh.st.FindTransportEndpoint(netProto(raddr.Addr()), header.TCPProtocolNumber, id, nicID).(tcpip.Endpoint)
		if !ok {
			return
		}
		st := tcp.EndpointState(e.State())
		// Info takes the endpoint's lock, which netstack holds from the
		// moment the handshake completes until the endpoint is queued:
		// a state read before it that says "established" is queued after.
		info, _ := e.Info().(*gstack.TransportEndpointInfo)
		if info == nil || info.ID.RemotePort != la.Port {
			return // the listener itself: no passive end (any more)
		}
		if st != tcp.StateSynRecv {
			return
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// resolveNextHop makes sure the kernel knows the link address of the next
// hop towards remote before the SYN leaves, so the first SYN is not lost to
// address resolution. A connection to one of the stack's own addresses
// needs none: it loops inside the shard (HandleLocal).
func (s *Stack) resolveNextHop(ctx context.Context, sh *shard, remote tcpip.Address) error {
	proto := header.IPv4ProtocolNumber
	if remote.Len() == 16 {
		proto = header.IPv6ProtocolNumber
	}
	route, terr := sh.st.FindRoute(nicID, tcpip.Address{}, remote, proto, false)
	if terr != nil {
		return translate(terr)
	}
	hop := route.NextHop()
	if hop.BitLen() == 0 {
		hop = remote
	}
	route.Release()
	nctx, cancel := context.WithTimeout(ctx, neighbourWait)
	err := s.sys.neigh.wait(nctx, hop)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("no link address for next hop %s (the kernel's ARP or neighbour discovery got no answer): %w", hop, errnoHostUnreach)
	}
	return nil
}

// netProto is the netstack protocol of an endpoint for address a.
func netProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Unmap().Is4() {
		return header.IPv4ProtocolNumber
	}
	return header.IPv6ProtocolNumber
}
