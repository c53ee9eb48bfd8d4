package stack

import (
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// A packet whose next hop has no link address yet is held, not dropped,
// while the kernel resolves it, and sent once the neighbour mirror learns
// the address: as the kernel queues packets on an unresolved neighbour
// (unres_qlen). The case is common, not exotic: a client's ARP request
// teaches the server's kernel the client's address, but the mirror hears
// of it a little after the client's SYN has reached the shard through
// XDP, and a dropped SYN-ACK costs the client a SYN retransmission (one
// second, and netstack's retransmission timeout then starts at three).
//
// Bounds: unresolvedPerHop packets per next hop (the oldest are dropped
// past it), unresolvedHops next hops, and unresolvedFor: a hold that
// outlives it is dropped (TCP retransmits, or the peer is gone).
const (
	unresolvedPerHop = 8
	unresolvedHops   = 256
	unresolvedFor    = 3 * time.Second
)

type heldPacket struct {
	pkt   *stack.PacketBuffer
	since time.Time
}

// unresolved is one link endpoint's held packets.
type unresolved struct {
	mu      sync.Mutex
	byHop   map[tcpip.Address][]heldPacket
	running bool // a flusher goroutine is waiting on the neighbour table
	stopped bool // the endpoint is closed: hold nothing more
	stop    chan struct{}
	done    sync.WaitGroup // the flusher
}

// holdUnresolved keeps pkt (a reference of its own) until hop resolves,
// and reports whether it did; false means the bounds said drop.
func (e *linkEndpoint) holdUnresolved(hop tcpip.Address, pkt *stack.PacketBuffer) bool {
	if e.neigh == nil {
		return false
	}
	u := &e.unres
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped {
		return false
	}
	if u.byHop == nil {
		u.byHop = make(map[tcpip.Address][]heldPacket)
		u.stop = make(chan struct{})
	}
	q, known := u.byHop[hop]
	if !known && len(u.byHop) >= unresolvedHops {
		return false
	}
	if len(q) >= unresolvedPerHop {
		q[0].pkt.DecRef()
		e.ctr.txNoNeighbour.Add(1)
		q = append(q[:0], q[1:]...)
	}
	pkt.IncRef()
	u.byHop[hop] = append(q, heldPacket{pkt: pkt, since: time.Now()})
	e.ctr.txHeld.Add(1)
	if !u.running {
		u.running = true
		u.done.Add(1)
		go e.flushUnresolved()
	}
	return true
}

// flushUnresolved sends held packets as their next hops resolve and drops
// those held too long, until none is held.
func (e *linkEndpoint) flushUnresolved() {
	u := &e.unres
	defer u.done.Done()
	for {
		ch := e.neigh.changes()
		var ready []heldPacket
		u.mu.Lock()
		if u.stopped {
			for hop, q := range u.byHop {
				for _, h := range q {
					h.pkt.DecRef()
				}
				delete(u.byHop, hop)
			}
			u.running = false
			u.mu.Unlock()
			return
		}
		now := time.Now()
		for hop, q := range u.byHop {
			if _, ok := e.neigh.lookup(hop); ok {
				ready = append(ready, q...)
				delete(u.byHop, hop)
				continue
			}
			keep := q[:0]
			for _, h := range q {
				if now.Sub(h.since) < unresolvedFor {
					keep = append(keep, h)
				} else {
					h.pkt.DecRef()
					e.ctr.txNoNeighbour.Add(1)
				}
			}
			if len(keep) == 0 {
				delete(u.byHop, hop)
			} else {
				u.byHop[hop] = keep
			}
		}
		done := len(u.byHop) == 0
		if done {
			u.running = false
		}
		u.mu.Unlock()
		if len(ready) > 0 {
			var list stack.PacketBufferList
			for _, h := range ready {
				list.PushBack(h.pkt)
			}
			e.WritePackets(list)
			list.Reset() // drops the holds' references
		}
		if done {
			return
		}
		t := time.NewTimer(unresolvedFor / 4)
		select {
		case <-ch:
		case <-t.C:
		case <-u.stop:
		}
		t.Stop()
	}
}

// stopUnresolved drops the held packets and waits for the flusher to end:
// once the endpoint is closed nothing may write to its frames.
func (e *linkEndpoint) stopUnresolved() {
	u := &e.unres
	u.mu.Lock()
	if u.stopped {
		u.mu.Unlock()
		return
	}
	u.stopped = true
	if u.stop != nil {
		close(u.stop)
	}
	u.mu.Unlock()
	u.done.Wait()
}
