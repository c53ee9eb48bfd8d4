package stack

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// portPlan splits the reserved ephemeral range into one contiguous slice
// per shard, so the owner of an active open is a function of its local
// port (Receive Flow Deliver). Contiguous slices rather than
// "port % N == q" let each shard's netstack pick ports with its own
// 4-tuple-aware allocator from a plain [first, last] range.
type portPlan struct {
	r      PortRange
	shards int
	per    int
}

func newPortPlan(r PortRange, shards int) (portPlan, error) {
	if shards < 1 {
		return portPlan{}, fmt.Errorf("port plan for %d shards", shards)
	}
	if r.Len() < shards {
		return portPlan{}, fmt.Errorf("ephemeral range %s has %d ports, fewer than %d shards", r, r.Len(), shards)
	}
	return portPlan{r: r, shards: shards, per: r.Len() / shards}, nil
}

// slice returns the ports shard q allocates from. The last shard also
// takes the remainder of the division.
func (p portPlan) slice(q int) PortRange {
	first := int(p.r.First) + q*p.per
	last := first + p.per - 1
	if q == p.shards-1 {
		last = int(p.r.Last)
	}
	return PortRange{First: uint16(first), Last: uint16(last)}
}

// owner returns the shard whose slice holds port, and false when port is
// outside the reserved range.
func (p portPlan) owner(port uint16) (int, bool) {
	if port < p.r.First || port > p.r.Last {
		return 0, false
	}
	q := (int(port) - int(p.r.First)) / p.per
	if q >= p.shards {
		q = p.shards - 1
	}
	return q, true
}

// flowDirectory records which shard owns each passive-open flow: the
// shard whose queue received its SYN. Every shard looks up the segments of
// passive flows here (reads never lock); an entry is written by the shard
// that claims it.
//
// An entry also holds the ISN of the SYN that created it: a SYN with the
// same ISN is a retransmission and goes to the owner, a SYN with another
// ISN opens a new incarnation of the 4-tuple (a client reusing its port
// while the old connection sits in TIME_WAIT) and belongs to the shard
// that receives it. Without that, a busy client's reused ports would drag
// most new connections to whichever shard served the port's last use.
type flowDirectory struct {
	m sync.Map // flowKey -> flowOwner
}

type flowOwner struct {
	shard int
	isn   uint32
}

// claim makes shard the owner of flow for the incarnation opened with isn,
// unless that same incarnation is already owned, and returns the owner.
func (d *flowDirectory) claim(flow flowKey, shard int, isn uint32) (owner int, claimed bool) {
	want := flowOwner{shard: shard, isn: isn}
	for {
		v, loaded := d.m.LoadOrStore(flow, want)
		if !loaded {
			return shard, true
		}
		cur := v.(flowOwner)
		if cur.isn == isn {
			return cur.shard, cur.shard == shard // a retransmitted SYN
		}
		if d.m.CompareAndSwap(flow, cur, want) { // a new incarnation
			return shard, true
		}
	}
}

// incarnation returns the owner of flow's incarnation opened with isn
// without claiming it, and removes the claim of another incarnation (a
// client that reused its port), which would otherwise steer the new
// one's segments to the old one's shard. ok is false when no shard owns
// the incarnation.
func (d *flowDirectory) incarnation(flow flowKey, isn uint32) (owner int, ok bool) {
	v, loaded := d.m.Load(flow)
	if !loaded {
		return 0, false
	}
	if cur := v.(flowOwner); cur.isn == isn {
		return cur.shard, true
	}
	d.m.CompareAndDelete(flow, v)
	return 0, false
}

func (d *flowDirectory) owner(flow flowKey) (int, bool) {
	v, ok := d.m.Load(flow)
	if !ok {
		return 0, false
	}
	return v.(flowOwner).shard, true
}

// release forgets flow if shard still owns it.
func (d *flowDirectory) release(flow flowKey, shard int) {
	if v, ok := d.m.Load(flow); ok && v.(flowOwner).shard == shard {
		d.m.CompareAndDelete(flow, v)
	}
}

// flowGrace is how long a claimed flow is kept even when the shard's
// netstack has no endpoint for it yet (a handshake answered with a SYN
// cookie creates its endpoint only on the final ACK).
const flowGrace = 10 * time.Second

// steerer decides, for the shard that received a segment, which shard
// owns it. One steerer per shard; only that shard's receive goroutine
// uses it, so its table of claimed flows needs no lock.
type steerer struct {
	shard   int
	plan    portPlan
	dir     *flowDirectory
	claimed map[flowKey]int64 // flows this shard claimed -> claim time (unix nanos), for sweeping
	limit   int               // most flows claimed held (maxClaimedFlows; tests make it small)
	// claimedPeak is the most flows claimed held since it was last built
	// (as sweeps saw it): Go maps keep their buckets when entries are
	// deleted, so sweep rebuilds claimed once it holds far fewer.
	claimedPeak int
	// needsClaim reports whether the shard's netstack has an endpoint for
	// a flow that still needs its claim (nil: none has). A full table
	// makes room by forgetting a claim that has none after evictAge.
	needsClaim func(flowKey) bool
	// untracked counts SYNs not recorded because claimed was full of
	// flows that could not be forgotten; evicted counts claims forgotten
	// to make room.
	untracked, evicted atomic.Uint64
}

// maxClaimedFlows bounds the passive flows one shard records. Every SYN
// claims its flow for at least flowGrace, so without a bound a SYN flood
// (spoofed sources, never completed) would grow the directory by its rate
// times flowGrace: gigabytes. A SYN that finds the table full makes room
// by forgetting a claim older than evictAge whose flow has no endpoint
// (a flood's SYN: answered with a SYN cookie, never completed); only when
// it finds none is it served by the shard that received it without being
// recorded.
const maxClaimedFlows = 16384

// evictAge is how long a claim is kept, table full or not, for its
// handshake to complete: a legitimate client's final ACK comes one round
// trip after the SYN-ACK, and once it has come the flow has an endpoint
// and is not forgotten. Past evictAge, under a flood of several thousand
// SYNs a second per shard, the claim of a flood's SYN makes room for a
// new one, so a legitimate connection's SYN is still recorded and a
// segment of it that arrives on another queue is handed to its owner.
const evictAge = 500 * time.Millisecond

// evictTries bounds the claims a SYN looks at to make room. Go's map
// iteration starts at a random place, so they are a random sample.
const evictTries = 8

func newSteerer(shard int, plan portPlan, dir *flowDirectory) *steerer {
	return &steerer{shard: shard, plan: plan, dir: dir, claimed: make(map[flowKey]int64), limit: maxClaimedFlows}
}

// makeRoom forgets one claim older than evictAge whose flow has no
// endpoint, from a random sample of evictTries, and reports whether it did.
func (s *steerer) makeRoom(now int64) bool {
	tries := evictTries
	for flow, since := range s.claimed {
		if tries == 0 {
			break
		}
		tries--
		if now-since < int64(evictAge) || s.needsClaim != nil && s.needsClaim(flow) {
			continue
		}
		delete(s.claimed, flow)
		s.dir.release(flow, s.shard)
		s.evicted.Add(1)
		return true
	}
	return false
}

// ownerOf returns the shard that must process the segment.
func (s *steerer) ownerOf(info *segmentInfo, now int64) int {
	if q, ok := s.plan.owner(info.flow.localPort); ok {
		return q // an active open: the port says who
	}
	if info.isSyn() {
		if len(s.claimed) >= s.limit {
			if _, known := s.claimed[info.flow]; !known && !s.makeRoom(now) {
				return s.untrackedSYN(info)
			}
		}
		owner, claimed := s.dir.claim(info.flow, s.shard, info.seq)
		if claimed {
			s.claimed[info.flow] = now
		}
		return owner
	}
	if owner, ok := s.dir.owner(info.flow); ok {
		return owner
	}
	// Unknown flow: let this shard's netstack answer it (a reset, or a
	// SYN-cookie ACK for one of its listeners).
	return s.shard
}

// untrackedSYN decides the owner of a SYN that found the claim table full
// of young or live flows, without recording it: the directory stays
// bounded and the flow is served where it arrived; only a segment of it
// that later arrives on another queue is not handed over. Two cases must
// still consult the directory. A retransmission of a handshake another
// shard recorded (same ISN; the client's retransmission may pick another
// queue) goes to that shard, which holds its half-open endpoint: answered
// here, it would get a second SYN-ACK with another sequence number and its
// final ACK would be handed to the recorded owner, which resets it. And a
// new incarnation of a recorded 4-tuple (a client reusing its port) must
// remove the old incarnation's claim, which would otherwise hand every
// later segment of the new connection to the old one's shard: a reset
// for each.
func (s *steerer) untrackedSYN(info *segmentInfo) int {
	if owner, ok := s.dir.incarnation(info.flow, info.seq); ok {
		return owner
	}
	s.untracked.Add(1)
	return s.shard
}

// shrinkMin and shrinkRatio: a claim table that held at least shrinkMin
// flows is rebuilt when it holds shrinkRatio times fewer. A flood fills
// it to maxClaimedFlows (about 1 MiB of buckets per shard) and the table
// would keep that size for the daemon's lifetime; rebuilt, it gives the
// memory back once the flood's claims are swept, at the cost of copying
// the few that are left.
const (
	shrinkMin   = 1024
	shrinkRatio = 8
)

// sweep forgets up to budget claimed flows older than flowGrace that
// another shard has since claimed or for which needsClaim reports false, and
// returns how many it forgot. It rebuilds the claim table when it holds
// far fewer flows than it once did.
func (s *steerer) sweep(now int64, budget int, needsClaim func(flowKey) bool) int {
	s.claimedPeak = max(s.claimedPeak, len(s.claimed))
	defer s.shrink()
	// A table that grows faster than budget per sweep (a flood) is swept
	// in bigger steps, so that it shrinks once the flood ends.
	budget = max(budget, len(s.claimed)/4)
	forgotten := 0
	for flow, since := range s.claimed {
		if budget == 0 {
			break
		}
		budget--
		if now-since < int64(flowGrace) {
			continue
		}
		if owner, ok := s.dir.owner(flow); ok && owner == s.shard && needsClaim(flow) {
			continue
		}
		delete(s.claimed, flow)
		s.dir.release(flow, s.shard)
		forgotten++
	}
	return forgotten
}

// shrink rebuilds the claim table when it holds shrinkRatio times fewer
// flows than its peak, so the buckets a flood made it grow are freed.
func (s *steerer) shrink() {
	if s.claimedPeak < shrinkMin || len(s.claimed) > s.claimedPeak/shrinkRatio {
		return
	}
	m := make(map[flowKey]int64, len(s.claimed))
	for flow, since := range s.claimed {
		m[flow] = since
	}
	s.claimed, s.claimedPeak = m, len(m)
}
