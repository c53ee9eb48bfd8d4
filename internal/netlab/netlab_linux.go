//go:build linux

package netlab

import (
	"github.com/fsstack/fsstack/internal/nsthread"

	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// closer runs the recorded undo steps once, last first.
type closer struct {
	mu    sync.Mutex
	steps []func() error // guarded by mu; nil after Close
	err   error          // result of the first Close
	done  bool
}

func (c *closer) push(f func() error) {
	c.mu.Lock()
	c.steps = append(c.steps, f)
	c.mu.Unlock()
}

func (c *closer) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return c.err
	}
	c.done = true
	var errs []error
	for i := len(c.steps) - 1; i >= 0; i-- {
		if err := c.steps[i](); err != nil {
			errs = append(errs, err)
		}
	}
	c.steps = nil
	c.err = errors.Join(errs...)
	return c.err
}

// validPrefix keeps names parseable by Sweep and valid as interface names.
var validPrefix = regexp.MustCompile(`^[a-zA-Z0-9_]{1,32}$`)

// leftover matches the namespace names New makes: fs-PREFIX-PID-RAND-{srv,cli,rtr}.
var leftover = regexp.MustCompile(`^fs-[a-zA-Z0-9_]+-([0-9]+)-[0-9a-f]{8}-(srv|cli|rtr)$`)

// Sweep removes lab namespaces left behind by processes that died without
// closing their labs (a killed test run). Labs of live processes are
// kept. It returns the names it removed.
func Sweep() ([]string, error) {
	ents, err := os.ReadDir(NetNSDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netlab: sweep: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		m := leftover.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
			continue // its process is alive
		}
		if err := netns.DeleteNamed(e.Name()); err != nil {
			if !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("netlab: sweep %s: %w", e.Name(), err))
				continue
			}
			// Not a mount point here: a name whose mount failed, or one
			// hidden beneath a later bind mount of the directory.
			if err := os.Remove(NSPath(e.Name())); err != nil {
				if errors.Is(err, unix.EBUSY) {
					err = fmt.Errorf("%w; when no lab runs, 'umount %s' uncovers it for the next sweep", ErrShadowed, NetNSDir)
				}
				errs = append(errs, fmt.Errorf("netlab: sweep %s: %w", e.Name(), err))
				continue
			}
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// New creates the server and client namespaces, the veth pair with
// opts.Queues rx/tx queues on each end, assigns 198.18.0.1/24 (server) and
// 198.18.0.2/24 (client), and sets lo and both veth ends up. On error
// everything created so far is removed.
func New(opts Options) (*Lab, error) {
	if opts.Queues == 0 {
		opts.Queues = 1
	}
	if opts.MTU < 0 || opts.MTU > 65535 {
		return nil, fmt.Errorf("netlab: MTU %d out of range", opts.MTU)
	}
	if opts.Queues < 0 || opts.Queues > 4096 {
		return nil, fmt.Errorf("netlab: queues %d out of range 1..4096", opts.Queues)
	}
	prefix := opts.Name
	if prefix == "" {
		prefix = "lab"
	}
	if !validPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("netlab: name %q: want 1 to 32 letters, digits or '_'", prefix)
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("netlab: random suffix: %w", err)
	}
	id := hex.EncodeToString(rnd[:]) // 8 chars
	short := prefix
	if len(short) > 4 {
		short = short[:4]
	}
	// Namespace names carry the pid so Sweep can tell leftovers of dead
	// processes from labs in use.
	nsBase := fmt.Sprintf("fs-%s-%d-%s", prefix, os.Getpid(), id)
	l := &Lab{
		ServerNS:    nsBase + "-srv",
		ClientNS:    nsBase + "-cli",
		ServerIf:    short + id + "s", // <= 13 chars
		ClientIf:    short + id + "c",
		ServerAddr:  ServerAddr,
		ClientAddr:  ClientAddr,
		ServerAddr6: ServerAddr6,
		ClientAddr6: ClientAddr6,
		Queues:      opts.Queues,

		checksumOffload: opts.ChecksumOffload,
		mtu:             opts.MTU,
		routerClientMTU: opts.RouterClientMTU,
	}
	setup := l.setup
	if opts.Routed {
		if opts.RouterClientMTU < 0 || opts.RouterClientMTU > 65535 {
			return nil, fmt.Errorf("netlab: router MTU %d out of range", opts.RouterClientMTU)
		}
		l.RouterNS = nsBase + "-rtr"
		l.RouterServerIf = short + id + "rs"
		l.RouterClientIf = short + id + "rc"
		l.RouterServerAddr, l.RouterClientAddr = RouterServerAddr, RouterClientAddr
		l.ClientAddr = RoutedClientAddr
		l.RouterServerAddr6, l.RouterClientAddr6 = RouterServerAddr6, RouterClientAddr6
		l.ClientAddr6 = RoutedClientAddr6
		setup = l.setupRouted
	}
	if err := setup(); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return l, nil
}

func (l *Lab) setup() error {
	for _, ns := range []string{l.ServerNS, l.ClientNS} {
		if err := newNamed(ns); err != nil {
			return fmt.Errorf("netlab: create netns %s: %w", ns, err)
		}
		l.closer.push(func() error {
			if err := netns.DeleteNamed(ns); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("netlab: delete netns %s: %w", ns, err)
			}
			return nil
		})
	}

	srvNS, err := netns.GetFromPath(NSPath(l.ServerNS))
	if err != nil {
		return fmt.Errorf("netlab: open netns %s: %w", l.ServerNS, err)
	}
	defer srvNS.Close()
	cliNS, err := netns.GetFromPath(NSPath(l.ClientNS))
	if err != nil {
		return fmt.Errorf("netlab: open netns %s: %w", l.ClientNS, err)
	}
	defer cliNS.Close()

	srv, err := netlink.NewHandleAt(srvNS)
	if err != nil {
		return fmt.Errorf("netlab: netlink handle in %s: %w", l.ServerNS, err)
	}
	defer srv.Close()
	cli, err := netlink.NewHandleAt(cliNS)
	if err != nil {
		return fmt.Errorf("netlab: netlink handle in %s: %w", l.ClientNS, err)
	}
	defer cli.Close()

	// Create the pair inside the server namespace with the peer directly
	// in the client namespace: nothing ever appears in the caller's one.
	q := uint32(l.Queues)
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:        l.ServerIf,
			NumRxQueues: l.Queues,
			NumTxQueues: l.Queues,
		},
		PeerName:        l.ClientIf,
		PeerNamespace:   netlink.NsFd(cliNS),
		PeerNumRxQueues: q,
		PeerNumTxQueues: q,
	}
	if err := srv.LinkAdd(veth); err != nil {
		return fmt.Errorf("netlab: add veth %s/%s with %d queues: %w", l.ServerIf, l.ClientIf, l.Queues, err)
	}
	// Deleting one end deletes both. Deleting the namespaces would too,
	// but asynchronously; do it explicitly so Close is synchronous.
	l.closer.push(func() error {
		nsh, err := netns.GetFromPath(NSPath(l.ServerNS))
		if err != nil {
			return nil // namespace already gone: the veth went with it
		}
		defer nsh.Close()
		h, err := netlink.NewHandleAt(nsh)
		if err != nil {
			return fmt.Errorf("netlab: netlink handle in %s: %w", l.ServerNS, err)
		}
		defer h.Close()
		link, err := h.LinkByName(l.ServerIf)
		if err != nil {
			return nil
		}
		if err := h.LinkDel(link); err != nil {
			return fmt.Errorf("netlab: delete veth %s: %w", l.ServerIf, err)
		}
		return nil
	})

	ends := []struct {
		h     *netlink.Handle
		name  string
		addr  string
		addr6 netip.Addr
		mac   *net.HardwareAddr
		index *int
	}{
		{srv, l.ServerIf, l.ServerAddr.String(), l.ServerAddr6, &l.ServerMAC, &l.ServerIndex},
		{cli, l.ClientIf, l.ClientAddr.String(), l.ClientAddr6, &l.ClientMAC, &l.ClientIndex},
	}
	for _, e := range ends {
		lo, err := e.h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("netlab: find lo: %w", err)
		}
		if err := e.h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("netlab: set lo up: %w", err)
		}
		link, err := e.h.LinkByName(e.name)
		if err != nil {
			return fmt.Errorf("netlab: find %s: %w", e.name, err)
		}
		if l.mtu != 0 {
			if err := e.h.LinkSetMTU(link, l.mtu); err != nil {
				return fmt.Errorf("netlab: set MTU of %s to %d: %w", e.name, l.mtu, err)
			}
		}
		addr, err := netlink.ParseAddr(fmt.Sprintf("%s/%d", e.addr, PrefixLen))
		if err != nil {
			return fmt.Errorf("netlab: parse address: %w", err)
		}
		if err := e.h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("netlab: add %s to %s: %w", addr, e.name, err)
		}
		if e.addr6.IsValid() {
			addr6, err := netlink.ParseAddr(fmt.Sprintf("%s/%d", e.addr6, PrefixLen6))
			if err != nil {
				return fmt.Errorf("netlab: parse address: %w", err)
			}
			addr6.Flags = unix.IFA_F_NODAD // usable at once
			if err := e.h.AddrAdd(link, addr6); err != nil {
				return fmt.Errorf("netlab: add %s to %s: %w (is IPv6 disabled? net.ipv6.conf.all.disable_ipv6)", addr6, e.name, err)
			}
		}
		if err := e.h.LinkSetUp(link); err != nil {
			return fmt.Errorf("netlab: set %s up: %w", e.name, err)
		}
		*e.mac = append(net.HardwareAddr(nil), link.Attrs().HardwareAddr...)
		*e.index = link.Attrs().Index
	}
	if !l.checksumOffload {
		for _, e := range []struct{ ns, ifname string }{{l.ServerNS, l.ServerIf}, {l.ClientNS, l.ClientIf}} {
			off := false
			if err := Do(e.ns, func() error { _, err := txChecksum(e.ifname, &off); return err }); err != nil {
				return fmt.Errorf("netlab: turn tx checksum offload off: %w", err)
			}
		}
	}
	return nil
}

// setupRouted builds the three namespaces of a routed lab (Options.Routed).
func (l *Lab) setupRouted() error {
	handles := map[string]*netlink.Handle{}
	nsh := map[string]netns.NsHandle{}
	defer func() {
		for _, h := range handles {
			h.Close()
		}
		for _, n := range nsh {
			n.Close()
		}
	}()
	for _, ns := range []string{l.ServerNS, l.RouterNS, l.ClientNS} {
		if err := newNamed(ns); err != nil {
			return fmt.Errorf("netlab: create netns %s: %w", ns, err)
		}
		l.closer.push(func() error {
			if err := netns.DeleteNamed(ns); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("netlab: delete netns %s: %w", ns, err)
			}
			return nil
		})
		n, err := netns.GetFromPath(NSPath(ns))
		if err != nil {
			return fmt.Errorf("netlab: open netns %s: %w", ns, err)
		}
		nsh[ns] = n
		if handles[ns], err = netlink.NewHandleAt(n); err != nil {
			return fmt.Errorf("netlab: netlink handle in %s: %w", ns, err)
		}
	}
	q := uint32(l.Queues)
	for _, p := range []struct{ ns, name, peerNS, peer string }{
		{l.ServerNS, l.ServerIf, l.RouterNS, l.RouterServerIf},
		{l.RouterNS, l.RouterClientIf, l.ClientNS, l.ClientIf},
	} {
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: p.name, NumRxQueues: l.Queues, NumTxQueues: l.Queues},
			PeerName:      p.peer,
			PeerNamespace: netlink.NsFd(nsh[p.peerNS]),

			PeerNumRxQueues: q,
			PeerNumTxQueues: q,
		}
		if err := handles[p.ns].LinkAdd(veth); err != nil {
			return fmt.Errorf("netlab: add veth %s/%s with %d queues: %w", p.name, p.peer, l.Queues, err)
		}
		l.closer.push(func() error { return deleteLink(p.ns, p.name) })
	}
	rtrMTU := l.routerClientMTU
	if rtrMTU == 0 {
		rtrMTU = l.mtu
	}
	for _, e := range []struct {
		ns, name string
		addr     netip.Addr
		addr6    netip.Addr
		mtu      int
		mac      *net.HardwareAddr
		index    *int
	}{
		{l.ServerNS, l.ServerIf, l.ServerAddr, l.ServerAddr6, l.mtu, &l.ServerMAC, &l.ServerIndex},
		{l.RouterNS, l.RouterServerIf, l.RouterServerAddr, l.RouterServerAddr6, l.mtu, nil, nil},
		{l.RouterNS, l.RouterClientIf, l.RouterClientAddr, l.RouterClientAddr6, rtrMTU, nil, nil},
		{l.ClientNS, l.ClientIf, l.ClientAddr, l.ClientAddr6, l.mtu, &l.ClientMAC, &l.ClientIndex},
	} {
		h := handles[e.ns]
		if lo, err := h.LinkByName("lo"); err != nil {
			return fmt.Errorf("netlab: find lo in %s: %w", e.ns, err)
		} else if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("netlab: set lo up in %s: %w", e.ns, err)
		}
		link, err := h.LinkByName(e.name)
		if err != nil {
			return fmt.Errorf("netlab: find %s: %w", e.name, err)
		}
		if e.mtu != 0 {
			if err := h.LinkSetMTU(link, e.mtu); err != nil {
				return fmt.Errorf("netlab: set MTU of %s to %d: %w", e.name, e.mtu, err)
			}
		}
		addr, err := netlink.ParseAddr(fmt.Sprintf("%s/%d", e.addr, PrefixLen))
		if err != nil {
			return fmt.Errorf("netlab: parse address: %w", err)
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("netlab: add %s to %s: %w", addr, e.name, err)
		}
		addr6, err := netlink.ParseAddr(fmt.Sprintf("%s/%d", e.addr6, PrefixLen6))
		if err != nil {
			return fmt.Errorf("netlab: parse address: %w", err)
		}
		addr6.Flags = unix.IFA_F_NODAD // usable at once
		if err := h.AddrAdd(link, addr6); err != nil {
			return fmt.Errorf("netlab: add %s to %s: %w (is IPv6 disabled? net.ipv6.conf.all.disable_ipv6)", addr6, e.name, err)
		}
		// No duplicate address detection for the link-local address
		// either: neighbour discovery, which the router's forwarding
		// needs, waits for it (a second or two).
		if err := Do(e.ns, func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/"+e.name+"/accept_dad", []byte("0"), 0o644)
		}); err != nil {
			return fmt.Errorf("netlab: turn DAD off on %s: %w", e.name, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("netlab: set %s up: %w", e.name, err)
		}
		if e.mac != nil {
			*e.mac = append(net.HardwareAddr(nil), link.Attrs().HardwareAddr...)
			*e.index = link.Attrs().Index
		}
		if !l.checksumOffload {
			off := false
			if err := Do(e.ns, func() error { _, err := txChecksum(e.name, &off); return err }); err != nil {
				return fmt.Errorf("netlab: turn tx checksum offload off on %s: %w", e.name, err)
			}
		}
	}
	for _, r := range []struct {
		ns, name string
		dst      string
		via      netip.Addr
	}{
		{l.ServerNS, l.ServerIf, "198.18.1.0/24", l.RouterServerAddr},
		{l.ClientNS, l.ClientIf, "198.18.0.0/24", l.RouterClientAddr},
		{l.ServerNS, l.ServerIf, "fd00:f6::/64", l.RouterServerAddr6},
		{l.ClientNS, l.ClientIf, "fd00:f5::/64", l.RouterClientAddr6},
	} {
		h := handles[r.ns]
		link, err := h.LinkByName(r.name)
		if err != nil {
			return fmt.Errorf("netlab: find %s: %w", r.name, err)
		}
		_, dst, _ := net.ParseCIDR(r.dst)
		if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: net.IP(r.via.AsSlice())}); err != nil {
			return fmt.Errorf("netlab: route %s via %s in %s: %w", r.dst, r.via, r.ns, err)
		}
	}
	return Do(l.RouterNS, func() error {
		for _, s := range []struct{ path, val string }{
			{"/proc/sys/net/ipv4/ip_forward", "1"},
			{"/proc/sys/net/ipv4/icmp_ratelimit", "0"},
			{"/proc/sys/net/ipv6/conf/all/forwarding", "1"},
			{"/proc/sys/net/ipv6/icmp/ratelimit", "0"},
		} {
			if err := os.WriteFile(s.path, []byte(s.val), 0o644); err != nil {
				return fmt.Errorf("netlab: router sysctl %s: %w", s.path, err)
			}
		}
		return nil
	})
}

// deleteLink deletes the interface name in ns, if both still exist: a
// veth's peer goes with it.
func deleteLink(ns, name string) error {
	nsh, err := netns.GetFromPath(NSPath(ns))
	if err != nil {
		return nil // namespace already gone: the veth went with it
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("netlab: netlink handle in %s: %w", ns, err)
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		return nil
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("netlab: delete veth %s: %w", name, err)
	}
	return nil
}

// newNamed creates the named namespace without moving the calling goroutine:
// the unshare happens on a locked thread that switches back afterwards.
func newNamed(name string) error {
	if _, err := os.Stat(NSPath(name)); err == nil {
		return fmt.Errorf("%s: %w", NSPath(name), os.ErrExist)
	}
	if err := sharedNetNSDir(); err != nil {
		return err
	}
	return nsthread.Isolated(func() error {
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		return err
	})
}

// Close removes the namespaces and the veth pair. It is idempotent and safe
// for concurrent use; later calls return the first call's result.
func (l *Lab) Close() error {
	if l == nil {
		return nil
	}
	return l.closer.close()
}

// Do runs fn on a locked OS thread switched into the network namespace ns (a
// name under NetNSDir or an absolute path) and switches back afterwards.
// Goroutines that fn starts do not inherit the namespace; sockets fn opens
// stay in ns after Do returns.
func Do(ns string, fn func() error) error {
	target, err := netns.GetFromPath(NSPath(ns))
	if err != nil {
		return fmt.Errorf("netlab: open netns %s: %w", ns, err)
	}
	defer target.Close()
	var ferr error
	err = nsthread.In(target, func() error { ferr = fn(); return ferr })
	if err != nil && err != ferr {
		return fmt.Errorf("netlab: netns %s: %w", ns, err) // the switch itself failed
	}
	return err
}

// sharedNetNSDir makes NetNSDir a shared mount point of its own before a
// namespace is mounted under it, as iproute2 does. Otherwise the first
// `ip netns add` that runs while labs exist (a test of another package,
// an operator) bind-mounts the directory over itself, which hides every
// namespace mounted there before: their names stay as plain files that
// neither `ip netns exec` nor Close can use, and they leak.
func sharedNetNSDir() error {
	netnsDirOnce.Do(func() {
		if err := os.MkdirAll(NetNSDir, 0o755); err != nil {
			netnsDirErr = fmt.Errorf("netlab: create %s: %w", NetNSDir, err)
			return
		}
		// Processes of this project serialize the check-then-bind; other
		// tools see a mount point once it is done and leave it alone.
		lock, err := os.OpenFile(filepath.Join(os.TempDir(), "fsstack-netns-dir.lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			netnsDirErr = fmt.Errorf("netlab: lock %s: %w", NetNSDir, err)
			return
		}
		defer lock.Close()
		if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
			netnsDirErr = fmt.Errorf("netlab: lock %s: %w", NetNSDir, err)
			return
		}
		defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
		err = unix.Mount("", NetNSDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if errors.Is(err, unix.EINVAL) { // not a mount point yet
			if err = unix.Mount(NetNSDir, NetNSDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
				err = unix.Mount("", NetNSDir, "none", unix.MS_SHARED|unix.MS_REC, "")
			}
		}
		if err != nil {
			netnsDirErr = fmt.Errorf("netlab: make %s a shared mount point: %w", NetNSDir, err)
		}
	})
	return netnsDirErr
}

var (
	netnsDirOnce sync.Once
	netnsDirErr  error
)

// ClientPackets returns the packets the client's veth end has sent and
// received so far: what crossed the wire to and from the server side,
// whichever stack served it. Benchmarks count packets per request with it.
func (l *Lab) ClientPackets() (tx, rx uint64, err error) {
	nsh, err := netns.GetFromPath(NSPath(l.ClientNS))
	if err != nil {
		return 0, 0, fmt.Errorf("netlab: open %s: %w", l.ClientNS, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return 0, 0, fmt.Errorf("netlab: netlink handle in %s: %w", l.ClientNS, err)
	}
	defer h.Close()
	link, err := h.LinkByName(l.ClientIf)
	if err != nil {
		return 0, 0, fmt.Errorf("netlab: %s in %s: %w", l.ClientIf, l.ClientNS, err)
	}
	st := link.Attrs().Statistics
	if st == nil {
		return 0, 0, fmt.Errorf("netlab: %s in %s: no statistics", l.ClientIf, l.ClientNS)
	}
	return st.TxPackets, st.RxPackets, nil
}
