package daemon

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/stack"
)

// serve runs one request and returns its completion. It runs on the
// client loop only.
func (c *client) serve(req *abi.Req) (cm abi.Cmpl) {
	cm.Id, cm.Op, cm.Sock = req.Id, req.Op, req.Sock
	switch req.Op {
	case abi.OpNop:
		return cm
	case abi.OpSocket:
		cm.Result, cm.Sock = c.opSocket(req)
		return cm
	case abi.OpForkPrepare:
		cm.Result = c.opForkPrepare(&cm)
		return cm
	case abi.OpForkInherit:
		cm.Result = c.opForkInherit(req)
		return cm
	case abi.OpForkCommit:
		cm.Result = c.opForkCommit(req)
		return cm
	}
	if req.Op >= abi.OpMax {
		cm.Result = neg(syscall.ENOSYS)
		return cm
	}
	r, e, ok := c.lookup(req.Sock)
	if !ok {
		return cm // the client is being dropped; nobody reads this
	}
	if e != 0 {
		cm.Result = neg(e)
		return cm
	}
	s := r.s
	switch req.Op {
	case abi.OpBind:
		cm.Result = s.opBind(req.Data[:], c)
	case abi.OpListen:
		cm.Result = s.opListen(int(req.Arg0))
		if cm.Result == 0 && c.handover && s.loopbackUnreached() {
			cm.Flags |= abi.CmplListenLoopback
		}
	case abi.OpAccept:
		cpu := -1
		if req.Flags&abi.ReqCPU != 0 && req.Arg0 >= 0 && c.d.listenSpawn != 0 {
			cpu = int(req.Arg0)
		}
		cm.Result, cm.Sock, cm.Val0 = c.opAccept(r, cm.Data[:], cpu)
	case abi.OpConnect:
		c.d.reapGoneClients(c)
		cm.Result = s.opConnect(req.Data[:], c.handover, cm.Data[:])
	case abi.OpShutdown:
		cm.Result = s.opShutdown(int(req.Arg0))
	case abi.OpClose:
		r.dups--
		if r.dups <= 0 {
			if r.acceptor {
				c.reclaimRing(r) // untaken connections go to the listener's other holders
			}
			s.detach(r)
			c.freeSlot(r)
		}
	case abi.OpGetsockname:
		cm.Result = s.opSockname(cm.Data[:])
	case abi.OpGetpeername:
		cm.Result = s.opPeername(cm.Data[:])
	case abi.OpSetsockopt:
		cm.Result = s.opSetsockopt(req.Arg0, req.Arg1, req.Arg2, req.Data[:])
	case abi.OpGetsockopt:
		cm.Result, cm.Val0 = s.opGetsockopt(req.Arg0, req.Arg1, req.Arg2, cm.Data[:])
	case abi.OpDup:
		if r.dups >= 1<<20 {
			cm.Result = neg(syscall.EMFILE)
		} else {
			r.dups++
		}
	}
	return cm
}

func (c *client) opSocket(req *abi.Req) (int32, uint32) {
	switch {
	case req.Arg0 != syscall.AF_INET && req.Arg0 != syscall.AF_INET6:
		return neg(syscall.EAFNOSUPPORT), 0
	case req.Arg1&0xf != syscall.SOCK_STREAM:
		return neg(syscall.ESOCKTNOSUPPORT), 0
	case req.Arg2 != 0 && req.Arg2 != syscall.IPPROTO_TCP:
		return neg(syscall.EPROTONOSUPPORT), 0
	}
	s := newSocket(c.d)
	s.owner = c.ownerUID()
	s.family = req.Arg0
	r, e := c.allocSlot(s, -1, 0)
	if e != 0 {
		s.abort()
		return neg(e), 0
	}
	return 0, r.id()
}

// opBind binds for client c. With handover (c said FSS_HELLO_HANDOVER) a
// specific address the backend does not own is answered
// -FSS_HANDOVER_ERRNO: the shim binds on the kernel instead, with the
// process's own credentials.
//
// The kernel's port rules apply (the Binder enforces them): a port below
// ip_unprivileged_port_start needs CAP_NET_BIND_SERVICE of the caller now
// (as the kernel checks the calling process, not the socket's creator),
// and SO_REUSEPORT shares a port only with sockets of the same owner (the
// socket's creator, kept across fork and dup as the kernel keeps it).
func (s *socket) opBind(data []byte, c *client) int32 {
	ap, e := decodeAddr(data, s.family)
	if e != 0 {
		return neg(e)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isBound || s.state != abi.StOpen {
		return neg(syscall.EINVAL)
	}
	if ap.Addr().Is4In6() && s.v6onlyLocked() {
		return neg(syscall.EINVAL) // as inet6_bind: no IPv4 on an IPv6-only socket
	}
	if r, ok := routerOf(s.d.opts.Backend); ok && c.handover && !ap.Addr().IsUnspecified() && !r.OwnsAddr(ap.Addr().Unmap()) {
		return -abi.HandoverErrno
	}
	s.bindAsked = ap
	if a := ap.Addr(); s.family == syscall.AF_INET6 && !a.IsUnspecified() && !a.Is4In6() {
		// inet6_bind: a specific IPv6 address makes the socket IPv6-only
		// (before the port is taken, so also when that fails)
		s.setOptLocked(v6onlyKey, binary.LittleEndian.AppendUint32(nil, 1))
	}
	if b, ok := binderOf(s.d.opts.Backend); ok {
		opts := BindOptions{
			ReuseAddr:    s.intOptLocked(optKey{syscall.SOL_SOCKET, syscall.SO_REUSEADDR}) != 0,
			ReusePort:    s.intOptLocked(optKey{syscall.SOL_SOCKET, soReusePort}) != 0,
			Owner:        s.owner,
			Unprivileged: ap.Port() != 0 && !c.mayBindService(),
			V6Only:       s.v6onlyLocked(),
		}
		bs, err := b.Bind(s.networkLocked(), ap, opts)
		if err != nil {
			s.d.log.Debug("shim bind failed", "addr", ap, "owner", s.owner, "unprivileged", opts.Unprivileged, "err", err)
			return neg(errnoOf(err))
		}
		s.reserved, ap = bs, bs.Addr()
	}
	s.bound, s.isBound = ap, true
	return 0
}

// maxBacklog is the kernel's default net.core.somaxconn.
const maxBacklog = 4096

func (s *socket) opListen(backlog int) int32 {
	asked := min(max(backlog, 0), maxBacklog)
	backlog = max(asked, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case abi.StListening:
		s.backlog = backlog
		if s.sdirect != nil {
			s.sdirect.SetBacklog(asked) // as a second listen(2) does
		}
		signal(s.space)
		return 0
	case abi.StOpen:
	default:
		return neg(syscall.EINVAL)
	}
	addr := netip.AddrPortFrom(wildcard(s.family), 0)
	if s.isBound {
		addr = s.bound
	}
	var ln net.Listener
	var err error
	if s.reserved != nil {
		// A listen refused for a port conflict leaves the socket bound,
		// as the kernel's does.
		if ln, err = s.reserved.Listen(asked); err == nil {
			s.reserved = nil
		}
	} else {
		ln, err = s.d.opts.Backend.Listen(s.networkLocked(), addr.String())
	}
	if err != nil {
		s.d.log.Debug("shim listen failed", "addr", addr, "err", err)
		return neg(errnoOf(err))
	}
	s.ln, s.backlog = ln, backlog
	s.applyListenerOptsLocked()
	s.acceptQ.init(ln)
	s.bound, s.isBound = addrPortOf(ln.Addr()), true
	s.state = abi.StListening
	s.events |= abi.EvListening
	s.publishLocked()
	if f, rc := directFD(ln); rc != nil {
		s.directFile, s.direct, s.kqueued = f, rc, 0
		s.d.goSocket(func() { s.directLoop(ln, rc) })
	} else if sl, ok := ln.(*stack.Listener); ok {
		s.startStackDirectLocked(sl, asked)
	} else {
		s.d.goSocket(func() { s.acceptLoop(ln) })
	}
	return 0
}

// loopbackUnreached reports whether the socket listens on INADDR_ANY
// while the backend does not reach loopback: kernel sockets of the
// namespace connecting to 127.0.0.1 would then find nothing, so the shim
// also listens on the kernel there (FSS_CMPL_LISTEN_LOOPBACK).
func (s *socket) loopbackUnreached() bool {
	r, ok := routerOf(s.d.opts.Backend)
	lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	if s.family == syscall.AF_INET6 {
		lo = netip.IPv6Loopback()
	}
	if !ok || r.Reaches(lo) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// what bind asked for (none: INADDR_ANY); a backend may have bound
	// the wildcard to an address of its own (shimd's SHIMD_ANY)
	return s.state == abi.StListening && (!s.bindAsked.IsValid() || s.bindAsked.Addr().IsUnspecified())
}

// opAccept hands out a queued connection; cpu >= 0 is the caller's CPU
// (FSS_REQ_CPU). It returns the result, the new socket id and the shard.
// r is the caller's reference to the listener: from now on its accept
// ring may be filled (a client that said FSS_HELLO_ACCEPT_RING).
func (c *client) opAccept(r *sockRef, peer []byte, cpu int) (int32, uint32, int32) {
	s := r.s
	s.mu.Lock()
	if s.state != abi.StListening {
		s.mu.Unlock()
		return neg(syscall.EINVAL), 0, 0
	}
	r.acceptCPU = cpu
	conn, orphan, shard, ok := s.takeLocked(cpu)
	if !ok {
		s.mu.Unlock()
		c.d.stats.acceptEmpty.Add(1)
		return neg(syscall.EAGAIN), 0, 0
	}
	c.countAccept(cpu, shard, len(s.acceptQ.qs))
	opts := s.inheritedOptsLocked()
	s.mu.Unlock()

	nr, ap, e := c.adopt(s, conn, orphan, shard, opts, nil)
	if e != 0 {
		// Table full: the connection stays queued, as in the kernel.
		s.mu.Lock()
		s.giveBackLocked(conn, orphan)
		s.mu.Unlock()
		return neg(e), 0, 0
	}
	encodeAddr(peer, ap, s.family)
	if c.acceptRing {
		// The caller accepts now: what else is queued goes into its
		// ring, for the accepts that follow without a round trip, as
		// far as ringLimitLocked allows (this accept is served).
		s.mu.Lock()
		limit := s.ringLimitLocked(r, 1)
		s.mu.Unlock()
		s.fillRing(r, false, limit)
	}
	return 0, nr.id(), int32(shard)
}

// opConnect starts a connect. With handover (FSS_HELLO_HANDOVER) a
// destination the backend does not reach is answered -FSS_HANDOVER_ERRNO,
// with the address bind asked for (if any) in out: the shim connects on the
// kernel instead.
func (s *socket) opConnect(data []byte, handover bool, out []byte) int32 {
	ap, e := decodeAddr(data, s.family)
	if e != 0 {
		return neg(e)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case abi.StConnecting:
		return neg(syscall.EALREADY)
	case abi.StConnected, abi.StListening:
		return neg(syscall.EISCONN)
	case abi.StClosed:
		if s.conn != nil {
			return neg(syscall.EISCONN)
		}
	}
	network, dst, e := dialTarget(s.family, s.v6onlyLocked(), ap)
	if e != 0 {
		return neg(e)
	}
	if r, ok := routerOf(s.d.opts.Backend); ok && handover && !r.Reaches(dst.Addr()) {
		if s.isBound {
			encodeAddr(out, s.bindAsked, s.family)
		}
		return -abi.HandoverErrno
	}
	ap = dst
	if s.state == abi.StClosed {
		// A failed connect may be retried.
		s.soError, s.events = 0, 0
	}
	ctx, cancel := context.WithCancel(s.d.ctx)
	s.cancel = cancel
	s.state = abi.StConnecting
	s.publishLocked()
	reserved := s.reserved
	s.reserved = nil
	// Start the connect here, on the client loop, when the backend can
	// (connect_linux.go): the SYNs of one client go out in the order of its
	// connects, each after the one before, as from one thread on the kernel.
	var wait func() (net.Conn, error)
	var startErr error
	var starter dialStarter
	if reserved != nil {
		starter, _ = reserved.(dialStarter)
	} else {
		starter, _ = s.d.opts.Backend.(dialStarter)
	}
	if starter != nil {
		wait, startErr = starter.StartDial(ctx, ap)
	}
	s.d.goSocket(func() {
		var conn net.Conn
		var err error
		switch {
		case startErr != nil:
			err = startErr
		case wait != nil:
			conn, err = wait()
		case reserved != nil:
			conn, err = reserved.DialContext(ctx, ap)
		default:
			conn, err = s.d.opts.Backend.DialContext(ctx, network, ap.String())
		}
		cancel()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.cancel = nil
		if s.dead {
			if conn != nil {
				conn.Close()
			}
			return
		}
		if err != nil {
			// one publish, one edge (markErrorLocked)
			s.markErrorLocked(errnoOf(err))
			s.events &^= abi.EvRdEOF // a failed connect reads as error, not EOF
			s.publishLocked()
			return
		}
		s.bound, s.isBound = addrPortOf(conn.LocalAddr()), true
		s.establishedLocked(conn)
	})
	return neg(syscall.EINPROGRESS)
}

func (s *socket) opShutdown(how int) int32 {
	if how < syscall.SHUT_RD || how > syscall.SHUT_RDWR {
		return neg(syscall.EINVAL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == abi.StListening {
		// A listener shut for reading stops listening (Linux disconnects
		// it); shut for writing only, nothing happens.
		if how != syscall.SHUT_WR {
			s.closeListenerLocked()
			s.dropQueuedLocked()
			// Linux disconnects it: a closed, unconnected socket again
			// (HUP, not readable), which may listen again.
			s.state = abi.StOpen
			s.events &^= abi.EvListening
			signal(s.space)
			s.publishLocked()
		}
		return 0
	}
	if s.state != abi.StConnected {
		return neg(syscall.ENOTCONN)
	}
	if how != syscall.SHUT_WR {
		s.shutRd = true
		s.rxPend = nil
		s.events |= abi.EvRdEOF
	}
	if how != syscall.SHUT_RD {
		s.shutWr = true
		s.events |= abi.EvWrEOF
		s.wakeTxLocked()
	}
	s.publishLocked()
	return 0
}

func (s *socket) opSockname(out []byte) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ap := netip.AddrPortFrom(wildcard(s.family), 0)
	switch {
	case s.conn != nil:
		ap = addrPortOf(s.conn.LocalAddr())
	case s.isBound:
		ap = s.bound
	}
	encodeAddr(out, ap, s.family)
	return 0
}

func (s *socket) opPeername(out []byte) int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil || s.state != abi.StConnected {
		return neg(syscall.ENOTCONN)
	}
	encodeAddr(out, addrPortOf(s.conn.RemoteAddr()), s.family)
	return 0
}

// networkLocked is the backend network of the socket's family: "tcp4";
// for AF_INET6 "tcp" (dual stack) or, with IPV6_V6ONLY, "tcp6".
func (s *socket) networkLocked() string {
	switch {
	case s.family != syscall.AF_INET6:
		return "tcp4"
	case s.v6onlyLocked():
		return "tcp6"
	}
	return "tcp"
}

// v6onlyLocked reports IPV6_V6ONLY of an AF_INET6 socket.
func (s *socket) v6onlyLocked() bool {
	return s.family == syscall.AF_INET6 && s.intOptLocked(v6onlyKey) != 0
}
