package stack

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/fsstack/fsstack/afxdp"
	"github.com/fsstack/fsstack/internal/nsthread"
)

const nicID tcpip.NICID = 1

// listenBacklog is what Listen queues over all shards together: the
// kernel's default somaxconn (and tcp_max_syn_backlog on a large machine).
const listenBacklog = 4096

// minShardBacklog is the least a shard's listener queues.
const minShardBacklog = 128

// shardBacklog is each of queues shards' share of listenBacklog. netstack
// bounds both a listener's completed connections and its handshakes in
// progress by it, and answers SYNs beyond it with SYN cookies, which cost
// no memory: so a SYN flood holds at most this many half-open endpoints
// (several KiB each in netstack, against a few hundred bytes for a kernel
// request socket) per shard.
func shardBacklog(queues int) int { return max(minShardBacklog, listenBacklog/max(queues, 1)) }

// system holds what New acquired from the kernel, in the order it must be
// given back.
type system struct {
	ns   netns.NsHandle // the interface's namespace (owned: closed by close)
	nl   *netlink.Handle
	link netlink.Link
	// addrs is the interface's IPv4 and IPv6 addresses (IPv6 link-local
	// ones included, without their zone), replaced whole by the
	// interface follower (iface_linux.go) when they change; any goroutine
	// reads it.
	addrs     atomic.Pointer[[]netip.Prefix]
	routes    []tcpip.Route // at start; later tables go straight to the shards
	mac       net.HardwareAddr
	steering  *afxdp.Steering
	neigh     *neighbourTable
	done      chan struct{} // stops the neighbour, address and route subscriptions
	follow    *ifaceFollower
	reserved  *portReservation
	attached  afxdp.AttachMode
	detached  bool
	ephemeral PortRange
}

// New validates cfg, attaches the steering program to cfg.Interface, opens
// one AF_XDP socket per queue and starts one shard per queue. Everything
// acquired is released again if a later step fails.
func New(cfg Config) (st *Stack, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With("iface", cfg.Interface)

	sys := &system{done: make(chan struct{}), ephemeral: cfg.EphemeralPorts}
	s := &Stack{cfg: cfg, sys: sys, listeners: make(map[*Listener]struct{}), steered: make(map[netip.AddrPort]int),
		draining: make(map[netip.AddrPort]struct{})}
	defer func() {
		if err != nil {
			for _, sh := range s.shards {
				if sh.st != nil {
					sh.st.Close()
					sh.st.Wait()
				}
			}
			_ = sys.detach()
			_ = sys.close(s.shards)
		}
	}()

	if os.Geteuid() != 0 {
		// Not fatal by itself (capabilities may suffice); the kernel
		// will say EPERM below if they do not.
		log.Debug("not running as root")
	}
	if sys.ns, err = openNetNS(cfg.NetNS); err != nil {
		return nil, err
	}
	if sys.nl, err = netlink.NewHandleAt(sys.ns); err != nil {
		return nil, fmt.Errorf("fsstack: open netlink: %w", err)
	}
	if err := sys.readInterface(cfg.Interface); err != nil {
		return nil, err
	}
	devQueues := sys.link.Attrs().NumRxQueues
	queues := cfg.Queues
	if queues == 0 {
		queues = min(runtime.NumCPU(), max(devQueues, 1))
	}
	if devQueues > 0 && queues > devQueues {
		return nil, fmt.Errorf("fsstack: %s has %d receive queues, %d asked; add queues with 'ethtool -L %s combined %d' (a veth pair: recreate it with numrxqueues %d numtxqueues %d) or ask for fewer with --queues",
			cfg.Interface, devQueues, queues, cfg.Interface, queues, queues, queues)
	}
	if err := checkCPUs(cfg.CPUs); err != nil {
		return nil, err
	}
	if s.plan, err = newPortPlan(cfg.EphemeralPorts, queues); err != nil {
		return nil, fmt.Errorf("fsstack: %w", err)
	}

	if sys.steering, err = afxdp.LoadSteering(afxdp.SteeringOptions{Queues: queues}); err != nil {
		return nil, fmt.Errorf("fsstack: load steering program: %w", err)
	}
	for _, p := range sys.ownAddrs() {
		if err := sys.steering.AddAddr(p.Addr()); err != nil {
			return nil, fmt.Errorf("fsstack: steer address %s: %w", p.Addr(), err)
		}
	}
	if err := sys.steering.SetEphemeralRange(cfg.EphemeralPorts.First, cfg.EphemeralPorts.Last); err != nil {
		return nil, fmt.Errorf("fsstack: steer ephemeral ports: %w", err)
	}

	sys.neigh = newNeighbourTable(sys.nl, sys.link.Attrs().Index, log)
	if err := sys.neigh.run(sys.ns, sys.done); err != nil {
		return nil, fmt.Errorf("fsstack: follow neighbour table: %w", err)
	}
	if err := sys.neigh.load(); err != nil {
		return nil, fmt.Errorf("fsstack: read neighbour table: %w", err)
	}

	// Kernel objects bound to the namespace are made on a thread inside it.
	err = inNetNS(sys.ns, func() error {
		for q := 0; q < queues; q++ {
			sh, err := s.newShard(q, queues)
			if err != nil {
				return err
			}
			if q == 0 {
				sh.afterSweep = s.sweepDraining
			}
			s.shards = append(s.shards, sh)
			if err := sys.steering.SetSocket(q, sh.sock); err != nil {
				return fmt.Errorf("fsstack: register queue %d socket: %w", q, err)
			}
			sh.shed, err = sys.steering.ShedGauge(sh.sock, sh.sock.RxFrames()/shedLowShare)
			if errors.Is(err, afxdp.ErrNoShedding) {
				if q == 0 {
					log.Info("a shard that falls behind under a SYN flood may lose handshakes' final ACKs", "err", err)
				}
				sh.shed, err = nil, nil
			}
			if err != nil {
				return fmt.Errorf("fsstack: queue %d: %w", q, err)
			}
		}
		res, err := reservePorts(cfg.EphemeralPorts, cfg.StateDir, log)
		if err != nil {
			return err
		}
		sys.reserved = res
		mode := afxdp.AttachAuto
		switch cfg.XDPMode {
		case XDPNative:
			mode = afxdp.AttachNative
		case XDPGeneric:
			mode = afxdp.AttachGeneric
		}
		sys.attached, err = sys.steering.Attach(sys.link.Attrs().Index, mode)
		if err != nil {
			return fmt.Errorf("fsstack: attach steering program to %s: %w", cfg.Interface, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	budget := &sendBudget{}
	budget.left.Store(cfg.SendBudget)
	for i, sh := range s.shards {
		sh.peers = s.shards
		sh.cpu, sh.log = -1, log
		sh.sndBudget, sh.sndBase, sh.sndMax = budget, int64(cfg.SendBuffer), int64(cfg.SendBufferMax)
		if len(cfg.CPUs) > 0 {
			sh.cpu = cfg.CPUs[i%len(cfg.CPUs)]
		}
		go sh.run()
		if !cfg.noRxWatch {
			go sh.watchRx()
		}
	}
	// Address and route changes from now on reach every shard and the
	// steering maps (and one pass right after subscribing catches what
	// changed since readInterface).
	sys.follow = newIfaceFollower(s, log)
	if err := sys.follow.run(sys.ns, sys.done); err != nil {
		return nil, fmt.Errorf("fsstack: follow addresses and routes of %s: %w", cfg.Interface, err)
	}
	txCsum := len(s.shards) > 0
	for _, sh := range s.shards {
		txCsum = txCsum && sh.sock.TxChecksumOn()
	}
	log.Info("fsstack up", "queues", queues, "xdp", sys.attached, "addrs", sys.ownAddrs(), "ephemeral", cfg.EphemeralPorts, "tx_checksum", txCsum)
	return s, nil
}

// readInterface reads the interface's link, IPv4 and IPv6 addresses and
// routes.
func (sys *system) readInterface(name string) error {
	link, err := sys.nl.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("fsstack: iface %s not found; list with 'ip link'", name)
		}
		return fmt.Errorf("fsstack: look up iface %s: %w", name, err)
	}
	sys.link = link
	sys.mac = link.Attrs().HardwareAddr
	if len(sys.mac) != 6 {
		return fmt.Errorf("fsstack: iface %s has no Ethernet address; fsstack serves Ethernet devices", name)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("fsstack: iface %s is down; bring it up with 'ip link set %s up'", name, name)
	}
	addrs, err := sys.readAddrs()
	if err != nil {
		return err
	}
	if len(addrs) == 0 {
		return fmt.Errorf("fsstack: iface %s has no IPv4 or IPv6 address; add one with 'ip addr add ADDR/LEN dev %s'", name, name)
	}
	sys.addrs.Store(&addrs)
	if sys.routes, err = sys.readRoutes(); err != nil {
		return err
	}
	return nil
}

// ownAddrs returns the interface's IPv4 and IPv6 addresses as last read;
// the slice must not be changed.
func (sys *system) ownAddrs() []netip.Prefix {
	if p := sys.addrs.Load(); p != nil {
		return *p
	}
	return nil
}

// readAddrs lists the interface's IPv4 and IPv6 addresses. An IPv6
// address the kernel has not finished duplicate address detection for
// (tentative) or found duplicated is left out: the kernel does not
// accept traffic to it either, and the address update that ends DAD
// brings it in.
func (sys *system) readAddrs() ([]netip.Prefix, error) {
	name := sys.link.Attrs().Name
	addrs, err := sys.nl.AddrList(sys.link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("fsstack: list addresses of %s: %w", name, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is6() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		if ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out, nil
}

// tcpipAddr converts a to netstack's form: 4 bytes for IPv4, 16 for IPv6.
func tcpipAddr(a netip.Addr) tcpip.Address {
	a = a.Unmap()
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// readRoutes lists the main table's IPv4 and IPv6 unicast routes out of
// the interface as netstack routes, most specific first (netstack takes
// the first match; a route of one family never matches the other's
// addresses).
func (sys *system) readRoutes() ([]tcpip.Route, error) {
	name := sys.link.Attrs().Name
	filter := &netlink.Route{LinkIndex: sys.link.Attrs().Index, Table: unix.RT_TABLE_MAIN}
	var routes []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := sys.nl.RouteListFiltered(fam, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("fsstack: list routes of %s: %w", name, err)
		}
		routes = append(routes, rs...)
	}
	type rt struct {
		r    tcpip.Route
		bits int
	}
	var rts []rt
	for _, r := range routes {
		if r.Type != 0 && r.Type != unix.RTN_UNICAST {
			continue
		}
		v6 := r.Family == netlink.FAMILY_V6
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if v6 {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if r.Dst != nil {
			ip, ok := netip.AddrFromSlice(r.Dst.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.Is6() != v6 {
				continue
			}
			ones, _ := r.Dst.Mask.Size()
			dst = netip.PrefixFrom(ip, ones)
		}
		if dst.Addr().IsMulticast() {
			continue
		}
		sub, err := tcpip.NewSubnet(tcpipAddr(dst.Masked().Addr()), tcpip.MaskFromBytes(net.CIDRMask(dst.Bits(), dst.Addr().BitLen())))
		if err != nil {
			continue
		}
		route := tcpip.Route{Destination: sub, NIC: nicID}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
			route.Gateway = tcpipAddr(gw)
		}
		rts = append(rts, rt{route, dst.Bits()})
	}
	sort.SliceStable(rts, func(i, j int) bool { return rts[i].bits > rts[j].bits })
	out := make([]tcpip.Route, 0, len(rts))
	for _, r := range rts {
		out = append(out, r.r)
	}
	return out, nil
}

// newShard builds shard q: its AF_XDP socket and its own netstack.
func (s *Stack) newShard(q, queues int) (*shard, error) {
	sys := s.sys
	cfg := s.cfg
	sock, err := afxdp.Open(sys.link.Attrs().Index, q, afxdp.SocketConfig{TxChecksum: !cfg.NoTxChecksum})
	if err != nil {
		return nil, fmt.Errorf("fsstack: open AF_XDP socket on %s queue %d: %w", cfg.Interface, q, err)
	}
	// The netpoller watches a duplicate of the socket's fd, so closing
	// its os.File never closes the fd the rings live on.
	pfd, err := unix.Dup(sock.FD())
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("fsstack: dup AF_XDP fd: %w", err)
	}
	unix.CloseOnExec(pfd)
	if err := unix.SetNonblock(pfd, true); err != nil {
		unix.Close(pfd)
		sock.Close()
		return nil, fmt.Errorf("fsstack: AF_XDP fd non-blocking: %w", err)
	}
	sh := &shard{
		id:       q,
		sock:     sock,
		rxFile:   os.NewFile(uintptr(pfd), fmt.Sprintf("afxdp-%s-%d", cfg.Interface, q)),
		wakeCh:   make(chan struct{}, 1),
		stopped:  make(chan struct{}),
		steer:    newSteerer(q, s.plan, &s.dir),
		in:       make([]*HandoffRing[*gstack.PacketBuffer], queues),
		rxDescs:  make([]afxdp.Desc, rxBatch),
		popBuf:   make([]*gstack.PacketBuffer, rxBatch),
		wakePeer: make([]bool, queues),
	}
	sh.steer.needsClaim = sh.flowNeedsClaim
	if cfg.claimLimit > 0 {
		sh.steer.limit = cfg.claimLimit
	}
	for r := range sh.in {
		if r != q {
			sh.in[r] = NewHandoffRing[*gstack.PacketBuffer](handoffSize)
		}
	}
	// veth carries frames in memory: partial checksums from the peer are
	// never corrupted in flight, so netstack need not verify them (and
	// cannot: a kernel peer leaves them to "hardware").
	rxOffload := sys.link.Type() == "veth"
	sh.ep = newLinkEndpoint(uint32(sys.link.Attrs().MTU), tcpip.LinkAddress(sys.mac), rxOffload, &xskTx{sock: sock}, sys.neigh, &sh.ctr)
	sh.ep.gso = !cfg.NoGSO
	sh.groOn = !cfg.NoGRO
	sh.gro.Init(sh.groOn)
	// While the shard goroutine is awake (in a pass or spinning between
	// passes) and coming round, it kicks at the end of every pass, so
	// writers leave their frames to it: one sendto then carries what
	// several goroutines wrote.
	sh.ep.shardAwake = sh.takesKicks
	sh.ep.acks.delay = cfg.DelayedACK
	sh.ep.onHold = sh.kick
	sh.ep.dropTx = cfg.dropTx
	// netstack keeps TIME_WAIT for netstackTW, the table the rest.
	var twRest time.Duration
	if cfg.TimeWait > cfg.netstackTW() {
		twRest = cfg.TimeWait
	}
	sh.tw.init(twRest, timeWaitMax)
	sh.ephemeral = cfg.EphemeralPorts

	gs := gstack.New(gstack.Options{
		// IPv6 with no neighbour discovery of its own: no duplicate
		// address detection, router solicitation, SLAAC or MLD (the zero
		// options). The kernel does all of that on the interface, and
		// the steering program leaves ICMPv6 to it.
		NetworkProtocols:   []gstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocolWithOptions(ipv6.Options{})},
		TransportProtocols: []gstack.TransportProtocolFactory{tcp.NewProtocol},
		// A connection to one of the interface's own addresses loops
		// inside the shard's stack, as the kernel sends it over lo: both
		// ends are fsstack sockets on the same shard, and nothing goes out
		// on the wire (the steering program never sees it).
		HandleLocal: true,
		// The shard's timers in a heap of its own (clock.go).
		Clock: newHeapClock(),
	})
	sh.st = gs
	sh.tw.release = func(f flowKey) { gs.ReleasePort(sh.tupleReservation(f)) }
	if err := configureTCP(gs, cfg, s.plan.slice(q)); err != nil {
		return sh, err
	}
	if terr := gs.CreateNICWithOptions(nicID, sh.ep, gstack.NICOptions{Name: fmt.Sprintf("fsstack%d", q)}); terr != nil {
		return sh, fmt.Errorf("fsstack: shard %d: create NIC: %s", q, terr)
	}
	for _, p := range sys.ownAddrs() {
		if err := addShardAddr(gs, p); err != nil {
			return sh, fmt.Errorf("fsstack: shard %d: %w", q, err)
		}
	}
	gs.SetRouteTable(sys.routes)
	return sh, nil
}

// configureTCP applies fsstack's TCP settings to one shard's netstack.
func configureTCP(gs *gstack.Stack, cfg Config, ports PortRange) error {
	sack := tcpip.TCPSACKEnabled(true)
	tw := tcpip.TCPTimeWaitTimeoutOption(cfg.netstackTW())
	reuse := tcpip.TCPTimeWaitReuseGlobal
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: cfg.SendBuffer, Max: max(cfg.SendBuffer, cfg.SendBufferMax, 4<<20)}
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: cfg.ReceiveBuffer, Max: max(cfg.ReceiveBuffer, 4<<20)}
	opts := []tcpip.SettableTransportProtocolOption{&sack, &tw, &reuse, &moderate, &snd, &rcv}
	for _, o := range opts {
		if terr := gs.SetTransportProtocolOption(tcp.ProtocolNumber, o); terr != nil {
			return fmt.Errorf("fsstack: set TCP option %T: %s", o, terr)
		}
	}
	if terr := gs.SetPortRange(ports.First, ports.Last); terr != nil {
		return fmt.Errorf("fsstack: set port range %s: %s", ports, terr)
	}
	return nil
}

// detach removes the steering program so the kernel takes the traffic
// back. Safe to call more than once.
func (sys *system) detach() error {
	if sys.detached || sys.steering == nil {
		return nil
	}
	sys.detached = true
	return sys.steering.Close()
}

// stopFollowing ends the neighbour, address and route subscriptions and
// waits until no address or route update is being applied, so none
// reaches a closing stack. Safe to call more than once.
func (sys *system) stopFollowing() {
	select {
	case <-sys.done:
	default:
		close(sys.done)
	}
	if sys.follow != nil {
		sys.follow.wait()
	}
}

// close releases everything else New acquired.
func (sys *system) close(shards []*shard) error {
	var errs []error
	for _, sh := range shards {
		if sh.shed != nil {
			errs = append(errs, sh.shed.Close())
			sh.shed = nil
		}
		if sh.sock != nil {
			errs = append(errs, sh.sock.Close())
		}
		if sh.rxFile != nil {
			sh.rxFile.Close()
			sh.rxFile = nil
		}
	}
	if sys.reserved != nil {
		err := inNetNS(sys.ns, sys.reserved.release)
		errs = append(errs, err)
		sys.reserved = nil
	}
	sys.stopFollowing()
	if sys.nl != nil {
		sys.nl.Close()
		sys.nl = nil
	}
	if sys.ns.IsOpen() {
		sys.ns.Close()
	}
	return errors.Join(errs...)
}

// openNetNS opens the namespace named by cfg.NetNS, or the caller's.
func openNetNS(name string) (netns.NsHandle, error) {
	if name == "" {
		h, err := netns.Get()
		if err != nil {
			return netns.None(), fmt.Errorf("fsstack: open own network namespace: %w", err)
		}
		return h, nil
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join("/var/run/netns", name)
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		return netns.None(), fmt.Errorf("fsstack: network namespace %s: %w; list with 'ip netns list'", name, err)
	}
	return h, nil
}

// inNetNS runs fn on a locked OS thread switched into ns (see
// internal/nsthread); the calling goroutine never changes namespace.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	var ferr error
	err := nsthread.In(ns, func() error { ferr = fn(); return ferr })
	if err != nil && err != ferr {
		return fmt.Errorf("fsstack: %w", err) // the switch itself failed
	}
	return err
}

// portReservation adds fsstack's ephemeral range to the namespace's
// net.ipv4.ip_local_reserved_ports, so the kernel never binds one of its
// own sockets to a port whose replies the steering program takes. It
// remembers the value to restore and, with a state directory, keeps it in
// a state file until it is restored (reserved_linux.go).
type portReservation struct {
	previous  string
	statePath string // "" without Config.StateDir
}

const reservedPortsPath = "/proc/sys/net/ipv4/ip_local_reserved_ports"

// reservePorts must run inside the target namespace.
func reservePorts(r PortRange, stateDir string, log *slog.Logger) (*portReservation, error) {
	prev, err := os.ReadFile(reservedPortsPath)
	if err != nil {
		return nil, fmt.Errorf("fsstack: read %s: %w", reservedPortsPath, err)
	}
	base, err := parsePortSet(string(prev))
	if err != nil {
		return nil, fmt.Errorf("fsstack: read %s: %w", reservedPortsPath, err)
	}
	res := &portReservation{}
	if stateDir != "" {
		if res.statePath, err = reservationStatePath(stateDir, r); err != nil {
			return nil, fmt.Errorf("fsstack: %w", err)
		}
		base = baseReservation(base, res.statePath, r, log)
		// The state file first: a crash right after the sysctl write
		// must find it.
		if err := writeReservationState(res.statePath, reservationState{Original: base.String(), Added: r.String()}); err != nil {
			return nil, fmt.Errorf("fsstack: %w (fix the permissions of %s or pass another state directory)", err, stateDir)
		}
	}
	res.previous = base.String()
	val := append(append(portSet(nil), base...), r).normal().String()
	if err := os.WriteFile(reservedPortsPath, []byte(val), 0o644); err != nil {
		if res.statePath != "" {
			os.Remove(res.statePath)
		}
		return nil, fmt.Errorf("fsstack: reserve ports %s in %s (run as root): %w", r, reservedPortsPath, err)
	}
	return res, nil
}

// release restores the previous value, then forgets the state file; it
// must run inside the namespace.
func (p *portReservation) release() error {
	v := p.previous
	if v == "" {
		v = "\n"
	}
	if err := os.WriteFile(reservedPortsPath, []byte(v), 0o644); err != nil {
		return fmt.Errorf("fsstack: restore %s: %w", reservedPortsPath, err)
	}
	if p.statePath != "" {
		if err := os.Remove(p.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("fsstack: remove reserved ports state file: %w", err)
		}
	}
	return nil
}

// checkCPUs reports a CPU in cpus that the process may not run on.
func checkCPUs(cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return fmt.Errorf("fsstack: read this process's CPUs: %w", err)
	}
	for _, c := range cpus {
		if c >= len(allowed)*64 || !allowed.IsSet(c) {
			return fmt.Errorf("fsstack: CPU %d is not one this process may run on (%s); list them with 'nproc' or 'taskset -cp %d'",
				c, cpuList(&allowed), os.Getpid())
		}
	}
	return nil
}

// cpuList formats a CPU set as a taskset list ("0-3,8").
func cpuList(set *unix.CPUSet) string {
	var b strings.Builder
	for c := 0; c < len(set)*64; c++ {
		if !set.IsSet(c) {
			continue
		}
		end := c
		for end+1 < len(set)*64 && set.IsSet(end+1) {
			end++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if end > c {
			fmt.Fprintf(&b, "%d-%d", c, end)
		} else {
			fmt.Fprintf(&b, "%d", c)
		}
		c = end
	}
	return b.String()
}

// defaultSendBudget is Config.SendBudget's default: a sixteenth of the
// machine's memory, at least 64 MiB.
func defaultSendBudget() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 64 << 20
	}
	return max(int64(si.Totalram)*int64(si.Unit)/16, 64<<20)
}
