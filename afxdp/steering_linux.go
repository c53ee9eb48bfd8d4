//go:build linux

package afxdp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Steering is the loaded steering program and its maps. Methods are safe
// for concurrent use (map updates are atomic in the kernel; attach and
// close are serialized by mu).
type Steering struct {
	opts   SteeringOptions
	prog   *ebpf.Program
	xsks   *ebpf.Map
	addrs  *ebpf.Map
	ports  *ebpf.Map
	addrs6 *ebpf.Map
	ports6 *ebpf.Map
	cfg    *ebpf.Map
	stats  *ebpf.Map
	shed   *ebpf.Map
	// shedMem maps shed's values; nil where the kernel cannot map an
	// array (before 5.5): no queue sheds then.
	shedMem *shedMapping

	mu     sync.Mutex
	link   link.Link // guarded by mu; nil until Attach
	closed bool      // guarded by mu
}

// LoadSteering loads the program and creates its maps. Nothing is
// attached yet.
func LoadSteering(opts SteeringOptions) (*Steering, error) {
	spec, err := steeringSpec(opts)
	if err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF objects to RLIMIT_MEMLOCK; newer
	// ones to the memory cgroup, and then this does nothing. It fails
	// without privileges, where loading fails anyway with a clearer error.
	memlockErr := rlimit.RemoveMemlock()
	coll, err := ebpf.NewCollection(spec)
	if errors.Is(err, unix.EINVAL) {
		// A kernel before 5.5 cannot map arrays.
		spec.Maps["shed"].Flags &^= bpfFMmapable
		coll, err = ebpf.NewCollection(spec)
	}
	if err != nil {
		if memlockErr != nil && !errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("afxdp: load steering program: %w (RLIMIT_MEMLOCK could not be raised: "+
				"%v; raise it with 'ulimit -l unlimited')", err, memlockErr)
		}
		return nil, bpfError("load steering program", err)
	}
	s := &Steering{
		opts:   opts,
		prog:   coll.Programs["steer"],
		xsks:   coll.Maps["xsks"],
		addrs:  coll.Maps["addrs"],
		ports:  coll.Maps["ports"],
		addrs6: coll.Maps["addrs6"],
		ports6: coll.Maps["ports6"],
		cfg:    coll.Maps["cfg"],
		stats:  coll.Maps["stats"],
		shed:   coll.Maps["shed"],
	}
	if s.shed.Flags()&bpfFMmapable != 0 {
		if s.shedMem, err = mapShed(s.shed.FD(), opts.Queues); err != nil {
			s.Close()
			return nil, fmt.Errorf("afxdp: map the steering program's shed array: %w", err)
		}
	}
	return s, nil
}

// bpfError turns BPF syscall failures into errors that say what to do.
func bpfError(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("afxdp: %s: %w (%w)", what, err, ErrPermission)
	case errors.Is(err, ebpf.ErrNotSupported), errors.Is(err, unix.ENOSYS):
		return errNotSupported("afxdp: "+what+" (kernel without BPF, XDP or XSKMAP support)", err)
	}
	return fmt.Errorf("afxdp: %s: %w", what, err)
}

// Attach attaches the program to the interface ifindex (in the calling
// thread's network namespace) as a BPF link, so the kernel detaches it
// when the link is closed or the process dies. AttachAuto tries native
// mode, then generic. It returns the mode used. A Steering attaches to one
// interface at most.
func (s *Steering) Attach(ifindex int, mode AttachMode) (AttachMode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return mode, errors.New("afxdp: attach: steering is closed")
	}
	if s.link != nil {
		return mode, errors.New("afxdp: attach: already attached")
	}
	ifname, err := ifaceName(ifindex)
	if err != nil {
		return mode, err
	}
	if n := deviceQueues(ifindex, ifname); n > 0 && n < s.opts.Queues {
		return mode, fmt.Errorf("afxdp: attach to %s: %w", ifname, &QueueError{Ifname: ifname, Have: n, Want: s.opts.Queues})
	}
	try := func(m AttachMode) error {
		flags := link.XDPDriverMode
		if m == AttachGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: s.prog, Interface: ifindex, Flags: flags})
		if err != nil {
			return err
		}
		s.link = l
		return nil
	}
	switch mode {
	case AttachNative, AttachGeneric:
		if err := try(mode); err != nil {
			return mode, attachError(ifname, mode, err)
		}
		return mode, nil
	case AttachAuto:
		nerr := try(AttachNative)
		if nerr == nil {
			return AttachNative, nil
		}
		if errors.Is(nerr, unix.EPERM) {
			return AttachNative, attachError(ifname, AttachNative, nerr)
		}
		if gerr := try(AttachGeneric); gerr != nil {
			return AttachGeneric, errors.Join(attachError(ifname, AttachNative, nerr), attachError(ifname, AttachGeneric, gerr))
		}
		return AttachGeneric, nil
	}
	return mode, fmt.Errorf("afxdp: attach: unknown mode %v", mode)
}

func attachError(ifname string, mode AttachMode, err error) error {
	what := fmt.Sprintf("attach XDP to %s in %s mode", ifname, mode)
	switch {
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, ebpf.ErrNotSupported):
		return errNotSupported("afxdp: "+what+" (device or kernel without XDP in this mode; try generic)", err)
	case errors.Is(err, unix.ERANGE):
		return fmt.Errorf("afxdp: %s: %w (the MTU of %s is too large for XDP in this mode, which needs a frame "+
			"to fit in one page: about 3500 on veth; lower it with 'ip link set %s mtu 1500' or use generic mode)",
			what, err, ifname, ifname)
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EEXIST):
		return fmt.Errorf("afxdp: %s: %w (another XDP program is attached: 'ip link show %s')", what, err, ifname)
	}
	return bpfError(what, err)
}

// SetSocket points XSKMAP[queue] at sock; nil removes the entry (frames
// for that queue then go to the kernel). Closing a socket also removes it.
func (s *Steering) SetSocket(queue int, sock *Socket) error {
	if queue < 0 || queue >= s.opts.Queues {
		return fmt.Errorf("afxdp: set socket for queue %d: want 0..%d", queue, s.opts.Queues-1)
	}
	if sock == nil {
		if err := s.xsks.Delete(uint32(queue)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("afxdp: clear socket of queue %d: %w", queue, err)
		}
		return nil
	}
	if sock.Queue() != queue {
		return fmt.Errorf("afxdp: set socket for queue %d: socket is bound to queue %d", queue, sock.Queue())
	}
	if err := s.xsks.Update(uint32(queue), uint32(sock.FD()), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("afxdp: set socket for queue %d: %w", queue, err)
	}
	return nil
}

// ShedGauge is one queue's share of the shed map (see steering.go): its
// shard publishes its fill ring's level after every receive pass, and the
// program drops SYNs without ACK on the queue while fewer than low free
// frames are left. Only the queue's shard calls Publish.
type ShedGauge struct {
	m    *shedMapping // keeps the mapping alive
	v    *shedValue
	sock *Socket
}

// ErrNoShedding is returned by ShedGauge where the program cannot know
// how many frames a socket has left.
var ErrNoShedding = errors.New("afxdp: no SYN shedding")

// ShedGauge makes sock's queue shed SYNs whenever fewer than low free rx
// frames are left. It refuses (ErrNoShedding) a kernel that cannot map
// BPF arrays (before 5.5) and a zero-copy socket, whose driver takes
// frames from the fill ring ahead of the packets, so that the ring's level
// does not say how many are left.
func (s *Steering) ShedGauge(sock *Socket, low int) (*ShedGauge, error) {
	if low < 0 {
		return nil, fmt.Errorf("afxdp: shed gauge for queue %d: low %d is negative", sock.Queue(), low)
	}
	if sock.ZeroCopy() {
		return nil, fmt.Errorf("%w on a zero-copy socket (queue %d): its fill ring's level does not say how many frames are left", ErrNoShedding, sock.Queue())
	}
	g, err := s.gauge(sock.Queue())
	if err != nil {
		return nil, err
	}
	g.sock = sock
	g.Publish()
	atomic.StoreUint64(&g.v.Low, uint64(low))
	return g, nil
}

// gauge returns queue's gauge, not shedding (Low 0) and with nothing
// published.
func (s *Steering) gauge(queue int) (*ShedGauge, error) {
	if queue < 0 || queue >= s.opts.Queues {
		return nil, fmt.Errorf("afxdp: shed gauge for queue %d: want 0..%d", queue, s.opts.Queues-1)
	}
	if s.shedMem == nil {
		return nil, fmt.Errorf("%w: this kernel cannot map BPF arrays (Linux 5.5 or later can)", ErrNoShedding)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.shedMem.hold() {
		return nil, fmt.Errorf("afxdp: shed gauge for queue %d: steering is closed", queue)
	}
	g := &ShedGauge{m: s.shedMem, v: s.shedMem.value(queue)}
	atomic.StoreUint64(&g.v.Low, 0)
	atomic.StoreUint64(&g.v.Avail, 0)
	atomic.StoreUint64(&g.v.Mark, 0)
	return g, nil
}

// Publish tells the program how many free frames the socket's fill ring
// has now. The count of frames steered is read first, so that frames
// steered meanwhile are counted twice rather than not at all (the
// estimate errs low), and Avail is stored before Mark, so that a program
// reading between the two sees the old Mark with the new Avail (low
// again).
func (g *ShedGauge) Publish() {
	mark := atomic.LoadUint64(&g.v.Taken)
	atomic.StoreUint64(&g.v.Avail, uint64(g.sock.FillLevel()))
	atomic.StoreUint64(&g.v.Mark, mark)
}

// Left returns the program's estimate of the free frames left now.
func (g *ShedGauge) Left() int64 {
	return int64(atomic.LoadUint64(&g.v.Avail) + atomic.LoadUint64(&g.v.Mark) - atomic.LoadUint64(&g.v.Taken))
}

// Shed returns how many SYNs the program dropped on the queue.
func (g *ShedGauge) Shed() uint64 { return atomic.LoadUint64(&g.v.Shed) }

// Stop turns shedding off for the queue.
func (g *ShedGauge) Stop() { atomic.StoreUint64(&g.v.Low, 0) }

// Close turns shedding off and lets go of the mapping; the gauge is not
// used again.
func (g *ShedGauge) Close() error {
	g.Stop()
	g.v = nil
	return g.m.release()
}

// hostAddr returns a as the steering maps know it: IPv4 (also for a
// v4-mapped a) or IPv6, without a zone.
func hostAddr(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// addrMap returns the map of a's family and its key.
func (s *Steering) addrMap(a netip.Addr) (*ebpf.Map, any) {
	if a.Is4() {
		return s.addrs, a.As4()
	}
	return s.addrs6, a.As16()
}

// AddAddr marks a as owned: TCP to a may be steered. a may be IPv4 or
// IPv6 (a v4-mapped address is its IPv4 address).
func (s *Steering) AddAddr(a netip.Addr) error {
	a = hostAddr(a)
	if !a.IsValid() || a.IsUnspecified() {
		return fmt.Errorf("afxdp: add address %v: not a host address", a)
	}
	m, k := s.addrMap(a)
	if err := m.Update(k, uint8(1), ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.E2BIG) {
			return fmt.Errorf("afxdp: add address %v: %w (all %d entries used: raise SteeringOptions.MaxAddrs)", a, err, m.MaxEntries())
		}
		return fmt.Errorf("afxdp: add address %v: %w", a, err)
	}
	return nil
}

// DelAddr removes a from the owned addresses.
func (s *Steering) DelAddr(a netip.Addr) error {
	a = hostAddr(a)
	if !a.IsValid() {
		return fmt.Errorf("afxdp: delete address %v: not an address", a)
	}
	m, k := s.addrMap(a)
	if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("afxdp: delete address %v: %w", a, err)
	}
	return nil
}

// portEntry returns the map and key for (a, port): an invalid a or
// 0.0.0.0 is port on every owned IPv4 address, :: on every owned IPv6
// address.
func (s *Steering) portEntry(a netip.Addr, port uint16, what string) (*ebpf.Map, any, error) {
	if port == 0 {
		return nil, nil, fmt.Errorf("afxdp: %s: port 0", what)
	}
	p := [2]byte{byte(port >> 8), byte(port)}
	a = hostAddr(a)
	if !a.IsValid() || a.Is4() {
		k := portKey{Port: p}
		if a.IsValid() {
			k.Addr = a.As4()
		}
		return s.ports, k, nil
	}
	return s.ports6, portKey6{Addr: a.As16(), Port: p}, nil
}

// AddPort steers TCP to (a, port); an unspecified or zero a (0.0.0.0)
// means port on every owned IPv4 address, :: on every owned IPv6 address.
func (s *Steering) AddPort(a netip.Addr, port uint16) error {
	m, k, err := s.portEntry(a, port, "add port")
	if err != nil {
		return err
	}
	if err := m.Update(k, uint8(1), ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.E2BIG) {
			return fmt.Errorf("afxdp: add port %v: %w (all %d entries used: raise SteeringOptions.MaxPorts)", netip.AddrPortFrom(a, port), err, m.MaxEntries())
		}
		return fmt.Errorf("afxdp: add port %v: %w", netip.AddrPortFrom(a, port), err)
	}
	return nil
}

// DelPort undoes AddPort.
func (s *Steering) DelPort(a netip.Addr, port uint16) error {
	m, k, err := s.portEntry(a, port, "delete port")
	if err != nil {
		return err
	}
	if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("afxdp: delete port %v: %w", netip.AddrPortFrom(a, port), err)
	}
	return nil
}

// SetEphemeralRange steers TCP to owned addresses with a destination port
// in [first, last] (fsstack's own active opens). first 0 and last 0
// disable the range.
func (s *Steering) SetEphemeralRange(first, last uint16) error {
	if (first == 0) != (last == 0) || first > last {
		return fmt.Errorf("afxdp: ephemeral range %d-%d: want 1 <= first <= last, or 0-0 for none", first, last)
	}
	if err := s.cfg.Update(uint32(0), rangeValue{First: uint32(first), Last: uint32(last)}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("afxdp: set ephemeral range: %w", err)
	}
	return nil
}

// Tables reads the owned addresses, ports and ephemeral range back from
// the maps.
func (s *Steering) Tables() (SteeringTables, error) {
	var t SteeringTables
	var a [4]byte
	var v uint8
	it := s.addrs.Iterate()
	for it.Next(&a, &v) {
		t.Addrs = append(t.Addrs, netip.AddrFrom4(a))
	}
	if err := it.Err(); err != nil {
		return t, fmt.Errorf("afxdp: read owned addresses: %w", err)
	}
	var k portKey
	it = s.ports.Iterate()
	for it.Next(&k, &v) {
		t.Ports = append(t.Ports, netip.AddrPortFrom(netip.AddrFrom4(k.Addr), uint16(k.Port[0])<<8|uint16(k.Port[1])))
	}
	if err := it.Err(); err != nil {
		return t, fmt.Errorf("afxdp: read owned ports: %w", err)
	}
	var a6 [16]byte
	it = s.addrs6.Iterate()
	for it.Next(&a6, &v) {
		t.Addrs = append(t.Addrs, netip.AddrFrom16(a6))
	}
	if err := it.Err(); err != nil {
		return t, fmt.Errorf("afxdp: read owned IPv6 addresses: %w", err)
	}
	var k6 portKey6
	it = s.ports6.Iterate()
	for it.Next(&k6, &v) {
		t.Ports = append(t.Ports, netip.AddrPortFrom(netip.AddrFrom16(k6.Addr), uint16(k6.Port[0])<<8|uint16(k6.Port[1])))
	}
	if err := it.Err(); err != nil {
		return t, fmt.Errorf("afxdp: read owned IPv6 ports: %w", err)
	}
	var r rangeValue
	if err := s.cfg.Lookup(uint32(0), &r); err != nil {
		return t, fmt.Errorf("afxdp: read ephemeral range: %w", err)
	}
	t.EphemeralFirst, t.EphemeralLast = uint16(r.First), uint16(r.Last)
	slices.SortFunc(t.Addrs, func(x, y netip.Addr) int { return x.Compare(y) })
	slices.SortFunc(t.Ports, func(x, y netip.AddrPort) int { return x.Compare(y) })
	return t, nil
}

// Stats returns the program's counters summed over CPUs.
func (s *Steering) Stats() (SteeringStats, error) {
	var sums [numStats]uint64
	for i := range sums {
		var per []uint64
		if err := s.stats.Lookup(uint32(i), &per); err != nil {
			return SteeringStats{}, fmt.Errorf("afxdp: read steering stats: %w", err)
		}
		for _, v := range per {
			sums[i] += v
		}
	}
	var shed uint64
	for q := 0; q < s.opts.Queues; q++ {
		var v shedValue
		if err := s.shed.Lookup(uint32(q), &v); err != nil {
			return SteeringStats{}, fmt.Errorf("afxdp: read steering shed counts: %w", err)
		}
		shed += v.Shed
	}
	return SteeringStats{
		Redirected: sums[statRedirected],
		Passed:     sums[statPassed],
		Malformed:  sums[statMalformed],
		NoSocket:   sums[statNoSocket],
		Shed:       shed,
	}, nil
}

// Close detaches the program (closes the link) and releases the program
// and maps. It is idempotent.
func (s *Steering) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.link != nil {
		if err := s.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("afxdp: detach steering: %w", err))
		}
		s.link = nil
	}
	if s.shedMem != nil {
		if err := s.shedMem.release(); err != nil {
			errs = append(errs, fmt.Errorf("afxdp: unmap the shed array: %w", err))
		}
	}
	for _, c := range []interface{ Close() error }{s.prog, s.xsks, s.addrs, s.ports, s.addrs6, s.ports6, s.cfg, s.stats, s.shed} {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("afxdp: close steering object: %w", err))
		}
	}
	return errors.Join(errs...)
}
