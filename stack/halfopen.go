package stack

import (
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Half-open connections under a SYN flood.
//
// netstack answers a SYN with a half-open endpoint until its listener
// holds backlog of them, then with SYN cookies (decision 15 of
// docs/ARCHITECTURE.md). A half-open endpoint retransmits its SYN-ACK with
// backoff up to netstack's MaxRTO of 120 s, so it lives about two minutes:
// a flood fills every shard's listener with them (several KiB each, and
// they keep their flows in the flow directory as live), and they outlive
// the flood by two minutes. Linux prunes its request queue when it is
// more than half full (old requests get fewer SYN-ACK retransmissions);
// a shard does the like. Once one of its listeners has answered a SYN
// with a cookie (its half-open connections reached the backlog), the
// shard aborts, at each sweep, the handshakes it has seen unfinished for
// halfOpenMaxAge, until it finds none left. A legitimate client has had
// its SYN-ACK four times by then (0, 1, 3 and 7 s), and a handshake
// stalled that long by loss is given up as Linux would under pressure
// (it cuts an old request's SYN-ACK retransmissions to two). The age is
// no shorter because it costs nothing: the flood's claims, swept 10 s
// after their SYN (flowGrace), hold the memory longer anyway. Listing the half-open
// connections walks all of the shard's endpoints, once a sweep and only
// while pruning; without SYN pressure a sweep reads one counter.

// halfOpenMaxAge is how long a half-open connection is kept under SYN
// pressure, counted from the first sweep that saw it.
const halfOpenMaxAge = 7 * time.Second

// halfOpen is a netstack endpoint in SYN-RCVD (*tcp.Endpoint).
type halfOpen interface {
	EndpointState() tcp.EndpointState
	Abort()
}

// halfOpenPruner is one shard's pruning state; only the shard's goroutine
// calls prune.
type halfOpenPruner struct {
	cookies uint64 // the shard's SYN cookies sent, at the last look
	active  bool
	seen    map[halfOpen]int64 // while active: half-open endpoints -> first seen (unix nanos)
	pruned  atomic.Uint64
}

// prune is called once per sweep with the shard's count of SYN cookies
// sent; list returns its endpoints in SYN-RCVD and is called only under
// pressure. It aborts the ones seen for halfOpenMaxAge and returns how
// many it aborted.
func (p *halfOpenPruner) prune(now int64, cookies uint64, list func() []halfOpen) int {
	if cookies != p.cookies {
		p.cookies, p.active = cookies, true
	}
	if !p.active {
		return 0
	}
	eps := list()
	if len(eps) == 0 {
		p.active, p.seen = false, nil
		return 0
	}
	next := make(map[halfOpen]int64, len(eps))
	n := 0
	for _, e := range eps {
		first, ok := p.seen[e]
		if !ok {
			first = now
		}
		if now-first < int64(halfOpenMaxAge) {
			next[e] = first
			continue
		}
		if e.EndpointState() == tcp.StateSynRecv { // not completed meanwhile
			e.Abort()
			n++
		}
	}
	p.seen = next
	p.pruned.Add(uint64(n))
	return n
}
