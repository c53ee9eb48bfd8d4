package stack

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ifaceFollower keeps the shards and the steering program in step with the
// kernel's view of the interface while the stack runs: its IPv4 and IPv6
// addresses
// (every shard's netstack, the steering program's owned addresses,
// OwnsAddr) and the main table's routes out of it (every shard's route
// table).
//
// It subscribes to address and route updates in the stack's namespace and
// answers each burst of updates by reading the whole list again and
// applying the difference, so a lost or coalesced update costs nothing and
// a broken subscription is mended by subscribing again and re-reading, as
// the neighbour mirror does.
type ifaceFollower struct {
	s   *Stack
	log *slog.Logger
	wg  sync.WaitGroup // the subscription goroutines

	mu     sync.Mutex    // serializes syncAddrs and syncRoutes
	routes []tcpip.Route // the table last given to the shards
}

func newIfaceFollower(s *Stack, log *slog.Logger) *ifaceFollower {
	return &ifaceFollower{s: s, log: log, routes: s.sys.routes}
}

// run subscribes to address and route updates until done is closed, and
// applies what changed since the stack read the interface.
func (f *ifaceFollower) run(ns netns.NsHandle, done <-chan struct{}) error {
	index := f.s.sys.link.Attrs().Index
	errCB := func(what string) func(error) {
		return func(err error) {
			select {
			case <-done: // the socket was closed on purpose
			default:
				f.log.Warn(what+" updates interrupted; subscribing again", "err", err)
			}
		}
	}
	err := follow(f, "address", done, func() (chan netlink.AddrUpdate, error) {
		ch := make(chan netlink.AddrUpdate, 256)
		opts := netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: errCB("address")}
		return ch, netlink.AddrSubscribeWithOptions(ch, done, opts)
	}, func(u netlink.AddrUpdate) bool {
		return u.LinkIndex == index
	}, f.syncAddrs)
	if err != nil {
		return fmt.Errorf("subscribe to address updates: %w", err)
	}
	err = follow(f, "route", done, func() (chan netlink.RouteUpdate, error) {
		ch := make(chan netlink.RouteUpdate, 256)
		opts := netlink.RouteSubscribeOptions{Namespace: &ns, ErrorCallback: errCB("route")}
		return ch, netlink.RouteSubscribeWithOptions(ch, done, opts)
	}, func(u netlink.RouteUpdate) bool {
		// A multipath route names its links in its hops.
		return u.LinkIndex == index || u.LinkIndex == 0
	}, f.syncRoutes)
	if err != nil {
		return fmt.Errorf("subscribe to route updates: %w", err)
	}
	return nil
}

// wait returns once the subscription goroutines have stopped (done closed).
func (f *ifaceFollower) wait() { f.wg.Wait() }

// follow subscribes, syncs once, and then syncs after every burst of
// relevant updates until done is closed, subscribing again (and syncing)
// when the subscription breaks.
func follow[T any](f *ifaceFollower, what string, done <-chan struct{}, subscribe func() (chan T, error), relevant func(T) bool, sync func()) error {
	ch, err := subscribe()
	if err != nil {
		return err
	}
	sync()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			for open := true; open; {
				select {
				case <-done:
					return
				case u, ok := <-ch:
					if !ok {
						open = false
						break
					}
					if !relevant(u) {
						continue
					}
					// One re-read covers every update already queued.
					for drained := false; !drained; {
						select {
						case _, ok := <-ch:
							drained = !ok
						default:
							drained = true
						}
					}
					sync()
				}
			}
			for {
				select {
				case <-done:
					return
				case <-time.After(resolveInterval):
				}
				if ch, err = subscribe(); err == nil {
					sync()
					break
				}
				f.log.Warn("subscribe to "+what+" updates", "err", err)
			}
		}
	}()
	return nil
}

// syncAddrs reads the interface's IPv4 and IPv6 addresses and applies the
// difference. A removed address leaves the steering program first (its
// traffic goes back to the kernel at once), then OwnsAddr, then every
// shard's netstack (no new connection is accepted on it; connections
// bound to it stay until they fail, as on Linux). An added one reaches
// the shards first, then OwnsAddr, then the steering program, so no
// segment is steered to a shard that would not take it.
func (f *ifaceFollower) syncAddrs() {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, sys := f.s, f.s.sys
	if s.isClosed() {
		return
	}
	now, err := sys.readAddrs()
	if err != nil {
		f.log.Warn("re-read addresses; keeping the ones known", "err", err)
		return
	}
	old := sys.ownAddrs()
	oldBits := make(map[netip.Addr]int, len(old))
	for _, p := range old {
		oldBits[p.Addr()] = p.Bits()
	}
	newBits := make(map[netip.Addr]int, len(now))
	for _, p := range now {
		newBits[p.Addr()] = p.Bits()
	}

	var kept []netip.Prefix
	for _, p := range old {
		bits, still := newBits[p.Addr()]
		if still && bits == p.Bits() {
			kept = append(kept, p)
			continue
		}
		if !still {
			if err := sys.steering.DelAddr(p.Addr()); err != nil {
				f.log.Warn("stop steering removed address", "addr", p, "err", err)
			}
		}
		for _, sh := range s.shards {
			if terr := sh.st.RemoveAddress(nicID, tcpipAddr(p.Addr())); terr != nil {
				if _, absent := terr.(*tcpip.ErrBadLocalAddress); !absent {
					f.log.Warn("remove address from shard", "shard", sh.id, "addr", p, "err", terr)
				}
			}
		}
		if !still {
			f.log.Info("address removed; its traffic goes to the kernel", "addr", p)
		}
	}
	// Until the additions below are in place, OwnsAddr answers for kept.
	sys.addrs.Store(&kept)

	final := slices.Clone(kept)
	for _, p := range now {
		bits, had := oldBits[p.Addr()]
		if had && bits == p.Bits() {
			continue
		}
		ok := true
		for _, sh := range s.shards {
			if err := addShardAddr(sh.st, p); err != nil {
				f.log.Warn("add address to shard", "shard", sh.id, "addr", p, "err", err)
				ok = false
			}
		}
		if !ok {
			continue
		}
		final = append(final, p)
		if !had {
			f.log.Info("address added", "addr", p)
		} else {
			f.log.Info("address prefix changed", "addr", p, "was", bits)
		}
	}
	sys.addrs.Store(&final)
	for _, p := range final {
		if _, had := oldBits[p.Addr()]; had {
			continue
		}
		if err := sys.steering.AddAddr(p.Addr()); err != nil {
			f.log.Warn("steer added address; its traffic stays with the kernel", "addr", p, "err", err)
		}
	}
	if len(final) == 0 && len(old) > 0 {
		f.log.Warn("the interface has no IPv4 or IPv6 address left; fsstack serves nothing until one is added",
			"iface", sys.link.Attrs().Name)
	}
}

// syncRoutes reads the main table's routes out of the interface and gives
// them to every shard if they changed.
func (f *ifaceFollower) syncRoutes() {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, sys := f.s, f.s.sys
	if s.isClosed() {
		return
	}
	routes, err := sys.readRoutes()
	if err != nil {
		f.log.Warn("re-read routes; keeping the ones known", "err", err)
		return
	}
	if slices.EqualFunc(routes, f.routes, func(a, b tcpip.Route) bool { return a.Equal(b) }) {
		return
	}
	for _, sh := range s.shards {
		sh.st.SetRouteTable(slices.Clone(routes))
	}
	f.routes = routes
	s.reach.clear()
	f.log.Info("routes changed", "routes", routeStrings(routes))
}

func routeStrings(rs []tcpip.Route) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

// addShardAddr gives one shard's netstack the address p.
func addShardAddr(gs *gstack.Stack, p netip.Prefix) error {
	pa := tcpip.ProtocolAddress{
		Protocol:          header.IPv4ProtocolNumber,
		AddressWithPrefix: tcpipAddr(p.Addr()).WithPrefix(),
	}
	if !p.Addr().Is4() {
		pa.Protocol = header.IPv6ProtocolNumber
	}
	pa.AddressWithPrefix.PrefixLen = p.Bits()
	if terr := gs.AddProtocolAddress(nicID, pa, gstack.AddressProperties{}); terr != nil {
		return fmt.Errorf("add address %s: %s", p, terr)
	}
	return nil
}
