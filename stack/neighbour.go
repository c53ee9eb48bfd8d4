package stack

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// neighbourTable mirrors the kernel's IPv4 and IPv6 neighbour tables for
// the served interface. The kernel keeps answering and sending ARP and
// neighbour discovery; fsstack only reads the result, and asks the kernel
// to resolve (or re-confirm) an address by sending RTM_NEWNEIGH with
// NTF_USE.
//
// Readers (every transmit) load an immutable map through an atomic
// pointer; the netlink goroutine replaces it on each change.
type neighbourTable struct {
	entries   atomic.Pointer[map[tcpip.Address]neighbour]
	mu        sync.Mutex // serializes writers of entries and changed
	changed   chan struct{}
	h         *netlink.Handle
	linkIndex int
	log       *slog.Logger
	// askedMu guards asked: unix nanos of the last resolve request per
	// address. A plain map: every transmit to a stale neighbour looks
	// here, and a sync.Map boxed the address into an allocation each
	// time.
	askedMu sync.Mutex
	asked   map[tcpip.Address]int64
}

type neighbour struct {
	mac   [6]byte
	stale bool
}

// resolveInterval limits how often fsstack asks the kernel about one
// address.
const resolveInterval = time.Second

// refreshInterval is how often a stale entry in use is re-confirmed.
const refreshInterval = 30 * time.Second

func newNeighbourTable(h *netlink.Handle, linkIndex int, log *slog.Logger) *neighbourTable {
	t := &neighbourTable{h: h, linkIndex: linkIndex, log: log, changed: make(chan struct{}),
		asked: make(map[tcpip.Address]int64)}
	empty := map[tcpip.Address]neighbour{}
	t.entries.Store(&empty)
	return t
}

// load reads the kernel's table once.
func (t *neighbourTable) load() error {
	var list []netlink.Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		l, err := t.h.NeighList(t.linkIndex, fam)
		if err != nil {
			return err
		}
		list = append(list, l...)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[tcpip.Address]neighbour, len(list))
	for _, n := range list {
		if e, ok := usable(&n); ok {
			m[neighAddr(n.IP)] = e
		}
	}
	t.entries.Store(&m)
	t.broadcastLocked()
	return nil
}

// neighAddr is ip as the table's key: 4 bytes for IPv4, 16 for IPv6.
func neighAddr(ip net.IP) tcpip.Address {
	if ip4 := ip.To4(); ip4 != nil {
		return tcpip.AddrFrom4Slice(ip4)
	}
	return tcpip.AddrFrom16Slice(ip.To16())
}

func usable(n *netlink.Neigh) (neighbour, bool) {
	if n.IP.To16() == nil || len(n.HardwareAddr) != 6 {
		return neighbour{}, false
	}
	if n.State&(unix.NUD_INCOMPLETE|unix.NUD_FAILED) != 0 || n.State == unix.NUD_NONE {
		return neighbour{}, false
	}
	var e neighbour
	copy(e.mac[:], n.HardwareAddr)
	e.stale = n.State&(unix.NUD_STALE) != 0
	return e, true
}

func (t *neighbourTable) broadcastLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *neighbourTable) update(u netlink.NeighUpdate) {
	if u.LinkIndex != t.linkIndex || u.IP.To16() == nil {
		return
	}
	addr := neighAddr(u.IP)
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.entries.Load()
	m := make(map[tcpip.Address]neighbour, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	e, ok := usable(&u.Neigh)
	if u.Type == unix.RTM_DELNEIGH || !ok {
		delete(m, addr)
	} else {
		m[addr] = e
	}
	t.entries.Store(&m)
	t.broadcastLocked()
}

// run follows the kernel's neighbour updates until done is closed. If the
// subscription breaks (the kernel drops netlink messages when a burst
// overflows the socket), it subscribes again and re-reads the table.
func (t *neighbourTable) run(ns netns.NsHandle, done <-chan struct{}) error {
	subscribe := func() (chan netlink.NeighUpdate, error) {
		ch := make(chan netlink.NeighUpdate, 256)
		opts := netlink.NeighSubscribeOptions{Namespace: &ns, ErrorCallback: func(err error) {
			select {
			case <-done: // the socket was closed on purpose
			default:
				t.log.Warn("neighbour updates interrupted; subscribing again", "err", err)
			}
		}}
		return ch, netlink.NeighSubscribeWithOptions(ch, done, opts)
	}
	ch, err := subscribe()
	if err != nil {
		return err
	}
	go func() {
		for {
			for u := range ch {
				t.update(u)
			}
			for {
				select {
				case <-done:
					return
				case <-time.After(resolveInterval):
				}
				if ch, err = subscribe(); err == nil {
					if err := t.load(); err != nil {
						t.log.Warn("re-read neighbour table", "err", err)
					}
					break
				}
				t.log.Warn("subscribe to neighbour updates", "err", err)
			}
		}
	}()
	return nil
}

// lookup returns the link address of addr. Stale entries are used (as the
// kernel does) and re-confirmed in the background.
func (t *neighbourTable) lookup(addr tcpip.Address) ([6]byte, bool) {
	e, ok := (*t.entries.Load())[addr]
	if !ok {
		return [6]byte{}, false
	}
	if e.stale {
		t.ask(addr, refreshInterval)
	}
	return e.mac, true
}

// resolve asks the kernel to resolve addr, at most once per
// resolveInterval.
func (t *neighbourTable) resolve(addr tcpip.Address) { t.ask(addr, resolveInterval) }

func (t *neighbourTable) ask(addr tcpip.Address, every time.Duration) {
	now := time.Now().UnixNano()
	t.askedMu.Lock()
	if last, ok := t.asked[addr]; ok && now-last < int64(every) {
		t.askedMu.Unlock()
		return
	}
	t.asked[addr] = now
	t.askedMu.Unlock()
	if t.h == nil {
		return // no kernel to ask (unit tests)
	}
	t.askKernel(addr)
}

// askKernel sends the kernel the resolve request, from a goroutine of its
// own. Apart from ask, so that addr moves to the heap (the goroutine's
// copy) only when a request goes out, not on every transmit that asks.
func (t *neighbourTable) askKernel(addr tcpip.Address) {
	family := netlink.FAMILY_V4
	if addr.Len() == 16 {
		family = netlink.FAMILY_V6
	}
	go func() {
		err := t.h.NeighSet(&netlink.Neigh{
			LinkIndex: t.linkIndex,
			Family:    family,
			IP:        net.IP(addr.AsSlice()),
			Flags:     netlink.NTF_USE,
		})
		if err != nil {
			t.log.Debug("ask kernel to resolve neighbour", "addr", addr, "err", err)
		}
	}()
}

// changes returns a channel closed at the table's next change.
func (t *neighbourTable) changes() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// wait resolves addr and waits until the kernel knows its link address or
// ctx ends.
func (t *neighbourTable) wait(ctx context.Context, addr tcpip.Address) error {
	for {
		ch := t.changes()
		if _, ok := t.lookup(addr); ok {
			return nil
		}
		t.resolve(addr)
		timer := time.NewTimer(resolveInterval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-ch:
		case <-timer.C:
		}
		timer.Stop()
	}
}
