package stack

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
)

// buildFrame makes an Ethernet/IPv4/TCP frame.
func buildFrame(src, dst [4]byte, sport, dport uint16, flags uint8, payload int) []byte {
	ipLen := 20 + 20 + payload
	f := make([]byte, 14+ipLen)
	binary.BigEndian.PutUint16(f[12:], ethTypeIPv4)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
	ip[8] = 64
	ip[9] = protoTCP
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return f
}

// m4 is an IPv4 address as a flow key holds it (v4-mapped).
func m4(a [4]byte) [16]byte { return netip.AddrFrom4(a).As16() }

// buildFrame6 makes an Ethernet/IPv6/TCP frame (no extension headers).
func buildFrame6(src, dst netip.Addr, sport, dport uint16, flags uint8, payload int) []byte {
	f := make([]byte, 14+40+20+payload)
	binary.BigEndian.PutUint16(f[12:], ethTypeIPv6)
	ip := f[14:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(20+payload))
	ip[6] = protoTCP
	ip[7] = 64
	s16, d16 := src.As16(), dst.As16()
	copy(ip[8:], s16[:])
	copy(ip[24:], d16[:])
	tcp := ip[40:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], 1234)
	tcp[12] = 5 << 4
	tcp[13] = flags
	return f
}

func TestParseSegment6(t *testing.T) {
	src, dst := netip.MustParseAddr("fd00:f5::2"), netip.MustParseAddr("fd00:f5::1")
	good := buildFrame6(src, dst, 40000, 80, tcpFlagSyn, 0)
	info, ok := parseSegment(good)
	if !ok {
		t.Fatal("valid IPv6 SYN frame rejected")
	}
	if info.flow != (flowKey{localAddr: dst.As16(), remoteAddr: src.As16(), localPort: 80, remotePort: 40000}) ||
		!info.isSyn() || !info.v6 || info.seq != 1234 || info.flow.isV4() {
		t.Fatalf("parsed %+v", info)
	}
	if info.ipStart != 14 || info.ipLength != 60 || info.tcpStart != 54 {
		t.Fatalf("ip span %d+%d, tcp at %d", info.ipStart, info.ipLength, info.tcpStart)
	}
	if got := info.flow.String(); got != "[fd00:f5::1]:80<-[fd00:f5::2]:40000" {
		t.Fatalf("String() = %s", got)
	}
	padded := append(buildFrame6(src, dst, 1, 2, tcpFlagAck, 0), 0, 0, 0, 0, 0, 0)
	if info, ok := parseSegment(padded); !ok || info.ipLength != 60 {
		t.Fatalf("padded ACK: ok=%v %+v", ok, info)
	}
	for name, f := range map[string]func([]byte) []byte{
		"truncated-ip":             func(b []byte) []byte { return b[:14+39] },
		"truncated-tcp":            func(b []byte) []byte { return b[:14+40+19] },
		"version-4":                func(b []byte) []byte { b[14] = 0x45; return b },
		"hop-by-hop":               func(b []byte) []byte { b[14+6] = 0; return b },
		"fragment-header":          func(b []byte) []byte { b[14+6] = 44; return b },
		"icmpv6":                   func(b []byte) []byte { b[14+6] = 58; return b },
		"payload-length-past-end":  func(b []byte) []byte { binary.BigEndian.PutUint16(b[14+4:], 1500); return b },
		"payload-length-below-tcp": func(b []byte) []byte { binary.BigEndian.PutUint16(b[14+4:], 19); return b },
		"data-offset-past-end":     func(b []byte) []byte { b[14+40+12] = 15 << 4; return b },
	} {
		if _, ok := parseSegment(f(buildFrame6(src, dst, 1, 2, tcpFlagSyn, 8))); ok {
			t.Errorf("%s accepted", name)
		}
	}
	// An IPv4 flow's key is v4-mapped and says so.
	v4, _ := parseSegment(buildFrame([4]byte{198, 18, 0, 2}, [4]byte{198, 18, 0, 1}, 40000, 80, tcpFlagSyn, 0))
	if !v4.flow.isV4() || v4.v6 || v4.flow.String() != "198.18.0.1:80<-198.18.0.2:40000" {
		t.Fatalf("IPv4 flow %v (v4 %v)", v4.flow, v4.flow.isV4())
	}
}

func TestParseSegment(t *testing.T) {
	src, dst := [4]byte{198, 18, 0, 2}, [4]byte{198, 18, 0, 1}
	good := buildFrame(src, dst, 40000, 80, tcpFlagSyn, 0)
	info, ok := parseSegment(good)
	if !ok {
		t.Fatal("valid SYN frame rejected")
	}
	if info.flow != (flowKey{localAddr: m4(dst), remoteAddr: m4(src), localPort: 80, remotePort: 40000}) || !info.isSyn() {
		t.Fatalf("parsed %+v", info)
	}
	if info.ipStart != 14 || info.ipLength != 40 {
		t.Fatalf("ip span %d+%d", info.ipStart, info.ipLength)
	}
	padded := append(buildFrame(src, dst, 1, 2, tcpFlagAck, 0), 0, 0, 0, 0, 0, 0) // link padding
	if info, ok := parseSegment(padded); !ok || info.ipLength != 40 || info.isSyn() {
		t.Fatalf("padded ACK: ok=%v %+v", ok, info)
	}

	mutate := func(name string, f func([]byte) []byte) {
		t.Run(name, func(t *testing.T) {
			b := f(buildFrame(src, dst, 1, 2, tcpFlagSyn, 8))
			if _, ok := parseSegment(b); ok {
				t.Fatalf("%s accepted", name)
			}
		})
	}
	mutate("truncated-eth", func(b []byte) []byte { return b[:10] })
	mutate("truncated-ip", func(b []byte) []byte { return b[:30] })
	mutate("truncated-tcp", func(b []byte) []byte { return b[:14+20+10] })
	mutate("not-ipv4-ethertype", func(b []byte) []byte { b[12] = 0x86; b[13] = 0xdd; return b })
	mutate("ip-version-6", func(b []byte) []byte { b[14] = 0x65; return b })
	mutate("ihl-too-small", func(b []byte) []byte { b[14] = 0x44; return b })
	mutate("ihl-past-end", func(b []byte) []byte { b[14] = 0x4f; return b[:14+40] })
	mutate("total-length-past-frame", func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 1500); return b })
	mutate("total-length-below-headers", func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 30); return b })
	mutate("fragment", func(b []byte) []byte { b[14+6] = 0x20; return b })
	mutate("fragment-offset", func(b []byte) []byte { b[14+7] = 0x10; return b })
	mutate("udp", func(b []byte) []byte { b[14+9] = 17; return b })
	mutate("tcp-data-offset-small", func(b []byte) []byte { b[14+20+12] = 4 << 4; return b })
	mutate("tcp-data-offset-past-end", func(b []byte) []byte { b[14+20+12] = 15 << 4; return b })
}

func FuzzParseSegment(f *testing.F) {
	f.Add(buildFrame([4]byte{1, 2, 3, 4}, [4]byte{5, 6, 7, 8}, 1, 2, tcpFlagSyn, 0))
	f.Add(buildFrame([4]byte{1, 2, 3, 4}, [4]byte{5, 6, 7, 8}, 65535, 80, tcpFlagAck|tcpFlagFin, 100))
	f.Add(buildFrame6(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), 1, 2, tcpFlagSyn, 10))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		info, ok := parseSegment(b)
		if !ok {
			return
		}
		// Invariants: the IPv4 span lies inside the frame and holds at
		// least both minimal headers, and the ports are the ones on the
		// wire.
		end := info.ipStart + info.ipLength
		if info.ipStart != ethHeaderLen || end > len(b) || info.ipLength < ipv4MinHeader+tcpMinHeader {
			t.Fatalf("bad span %d+%d in %d bytes", info.ipStart, info.ipLength, len(b))
		}
		if info.v6 != !info.flow.isV4() || info.tcpStart < ethHeaderLen+ipv4MinHeader || info.tcpStart+tcpMinHeader > end {
			t.Fatalf("family or TCP offset wrong: %+v", info)
		}
		tcp := b[info.tcpStart:]
		if binary.BigEndian.Uint16(tcp[2:]) != info.flow.localPort || binary.BigEndian.Uint16(tcp[0:]) != info.flow.remotePort {
			t.Fatal("ports differ from the wire")
		}
	})
}

// icmpFragNeededFrame wraps the IPv4 packet of seg (quoting n bytes of
// it) in an ICMP fragmentation-needed error from router to the segment's
// sender.
func icmpFragNeededFrame(seg []byte, router [4]byte, n int) []byte {
	quoted := seg[14:]
	quoted = quoted[:min(n, len(quoted))]
	ipLen := 20 + 8 + len(quoted)
	f := make([]byte, 14+ipLen)
	binary.BigEndian.PutUint16(f[12:], ethTypeIPv4)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen))
	ip[8] = 64
	ip[9] = protoICMP
	copy(ip[12:], router[:])
	copy(ip[16:], seg[14+12:14+16])
	ip[20], ip[21] = icmpDestUnreach, icmpFragNeeded
	binary.BigEndian.PutUint16(ip[26:], 1280)
	copy(ip[28:], quoted)
	return f
}

// TestParseICMPError: a fragmentation-needed error names the flow of the
// segment it quotes, from the sender's side, so it steers like that
// flow's segments.
func TestParseICMPError(t *testing.T) {
	local, remote, router := [4]byte{198, 18, 0, 1}, [4]byte{198, 18, 1, 2}, [4]byte{198, 18, 0, 2}
	seg := buildFrame(local, remote, 7700, 54020, tcpFlagAck, 1460)
	want := flowKey{localAddr: m4(local), remoteAddr: m4(remote), localPort: 7700, remotePort: 54020}
	for _, n := range []int{28, 1500} { // the 8 bytes RFC 792 asks for; what Linux quotes
		f := icmpFragNeededFrame(seg, router, n)
		if _, ok := parseSegment(f); ok {
			t.Fatal("parseSegment took an ICMP frame")
		}
		info, ok := parseICMPError(f)
		if !ok || info.flow != want || !info.icmp || info.isSyn() || info.ipStart != 14 || info.ipLength != len(f)-14 {
			t.Fatalf("quoting %d bytes: ok=%v %+v, want flow %v", n, ok, info, want)
		}
	}
	for name, f := range map[string]func([]byte) []byte{
		"port unreachable": func(b []byte) []byte { b[14+21] = 3; return b },
		"time exceeded":    func(b []byte) []byte { b[14+20], b[14+21] = 11, 0; return b },
		"quoted udp":       func(b []byte) []byte { b[14+28+9] = 17; return b },
		"ports cut":        func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 20+8+20+3); return b[:14+20+8+20+3] },
		"outer fragment":   func(b []byte) []byte { b[14+6] = 0x20; return b },
		"tcp segment":      func([]byte) []byte { return seg },
	} {
		if _, ok := parseICMPError(f(icmpFragNeededFrame(seg, router, 1500))); ok {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestHandoffRingAgainstReference(t *testing.T) {
	r := NewHandoffRing[int](8)
	if r.Cap() != 8 {
		t.Fatalf("cap %d", r.Cap())
	}
	var ref []int
	next := 0
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([]int, 5)
	for i := 0; i < 100000; i++ {
		if rng.IntN(2) == 0 {
			ok := r.Push(next)
			if ok != (len(ref) < 8) {
				t.Fatalf("push %d: ok=%v with %d queued", next, ok, len(ref))
			}
			if ok {
				ref = append(ref, next)
			}
			next++
		} else {
			n := r.PopBatch(out[:rng.IntN(len(out))+1])
			for j := 0; j < n; j++ {
				if out[j] != ref[j] {
					t.Fatalf("popped %d, want %d", out[j], ref[j])
				}
			}
			ref = ref[n:]
		}
		if r.Len() != len(ref) {
			t.Fatalf("len %d, want %d", r.Len(), len(ref))
		}
	}
}

func TestHandoffRingConcurrent(t *testing.T) {
	r := NewHandoffRing[int](64)
	const total = 200000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < total; {
			if r.Push(i) {
				i++
			}
		}
	}()
	out := make([]int, 16)
	want := 0
	for want < total {
		n := r.PopBatch(out)
		for j := 0; j < n; j++ {
			if out[j] != want {
				t.Fatalf("got %d, want %d", out[j], want)
			}
			want++
		}
	}
	<-done
}

func TestPortPlan(t *testing.T) {
	p, err := newPortPlan(PortRange{61000, 65499}, 4)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]int{}
	for q := 0; q < 4; q++ {
		sl := p.slice(q)
		for port := int(sl.First); port <= int(sl.Last); port++ {
			if o, ok := p.owner(uint16(port)); !ok || o != q {
				t.Fatalf("port %d in slice of %d, owner %d/%v", port, q, o, ok)
			}
			seen[uint16(port)]++
		}
	}
	if len(seen) != 4500 {
		t.Fatalf("slices cover %d ports, want 4500", len(seen))
	}
	for port, n := range seen {
		if n != 1 {
			t.Fatalf("port %d in %d slices", port, n)
		}
	}
	if _, ok := p.owner(60999); ok {
		t.Fatal("port below range owned")
	}
	if _, ok := p.owner(65500); ok {
		t.Fatal("port above range owned")
	}
	// Uneven split: the last shard takes the remainder.
	p3, _ := newPortPlan(PortRange{100, 109}, 3)
	if s := p3.slice(2); s != (PortRange{106, 109}) {
		t.Fatalf("last slice %v", s)
	}
	if _, err := newPortPlan(PortRange{100, 101}, 3); err == nil {
		t.Fatal("range smaller than shard count accepted")
	}
}

func TestSteererPassiveFlows(t *testing.T) {
	plan, _ := newPortPlan(PortRange{61000, 61999}, 2)
	var dir flowDirectory
	s0, s1 := newSteerer(0, plan, &dir), newSteerer(1, plan, &dir)
	flow := flowKey{localAddr: m4([4]byte{10, 0, 0, 1}), remoteAddr: m4([4]byte{10, 0, 0, 2}), localPort: 80, remotePort: 40000}
	syn := segmentInfo{flow: flow, flags: tcpFlagSyn, seq: 1000}
	ack := segmentInfo{flow: flow, flags: tcpFlagAck}

	if o := s1.ownerOf(&syn, 1); o != 1 {
		t.Fatalf("SYN on shard 1 owned by %d", o)
	}
	// A retransmitted SYN and the rest of the flow on queue 0 go to 1.
	if o := s0.ownerOf(&syn, 2); o != 1 {
		t.Fatalf("SYN retransmit on shard 0 owned by %d", o)
	}
	if o := s0.ownerOf(&ack, 2); o != 1 {
		t.Fatalf("ACK on shard 0 owned by %d", o)
	}
	if o := s1.ownerOf(&ack, 2); o != 1 {
		t.Fatalf("ACK on shard 1 owned by %d", o)
	}
	// A new incarnation of the 4-tuple (another ISN: the client reused its
	// port) belongs to the shard that receives its SYN, and takes the rest
	// of the flow with it.
	syn2 := segmentInfo{flow: flow, flags: tcpFlagSyn, seq: 99999}
	if o := s0.ownerOf(&syn2, 3); o != 0 {
		t.Fatalf("new incarnation on shard 0 owned by %d", o)
	}
	if o := s1.ownerOf(&ack, 3); o != 0 {
		t.Fatalf("ACK of the new incarnation on shard 1 owned by %d", o)
	}
	// Shard 1 forgets the flow it no longer owns; shard 0 keeps it.
	if n := s1.sweep(int64(flowGrace)+10, 100, func(flowKey) bool { return true }); n != 1 {
		t.Fatalf("shard 1 kept a flow shard 0 re-claimed")
	}
	if o, _ := dir.owner(flow); o != 0 {
		t.Fatalf("sweep of shard 1 removed shard 0's claim")
	}
	// And back to shard 1 for the checks below.
	syn3 := segmentInfo{flow: flow, flags: tcpFlagSyn, seq: 5}
	if o := s1.ownerOf(&syn3, 1); o != 1 {
		t.Fatalf("third incarnation on shard 1 owned by %d", o)
	}
	s0.sweep(int64(flowGrace)+10, 100, func(flowKey) bool { return true })

	// An unknown flow stays where it arrived.
	other := segmentInfo{flow: flowKey{localPort: 80, remotePort: 1}, flags: tcpFlagAck}
	if o := s0.ownerOf(&other, 2); o != 0 {
		t.Fatalf("unknown flow owned by %d", o)
	}
	// Active opens: the port decides, whatever queue it came in on.
	reply := segmentInfo{flow: flowKey{localPort: 61700}, flags: tcpFlagSyn | tcpFlagAck}
	if o := s0.ownerOf(&reply, 2); o != 1 {
		t.Fatalf("reply to port 61700 owned by %d", o)
	}
	// Sweeping keeps live and young flows, forgets dead old ones.
	if n := s1.sweep(int64(flowGrace), 100, func(flowKey) bool { return false }); n != 0 {
		t.Fatalf("young flow swept")
	}
	if n := s1.sweep(int64(flowGrace)+10, 100, func(flowKey) bool { return true }); n != 0 {
		t.Fatalf("live flow swept")
	}
	if n := s1.sweep(int64(flowGrace)+10, 100, func(flowKey) bool { return false }); n != 1 {
		t.Fatalf("dead flow kept")
	}
	if _, ok := dir.owner(flow); ok {
		t.Fatal("directory still names an owner after sweep")
	}
}

// TestSteererFullTable: a SYN that finds the claim table full (a flood)
// is still recorded when a claim older than evictAge has no endpoint, so
// its flow's later segments on another queue are handed over; young
// claims and claims of live flows are kept.
func TestSteererFullTable(t *testing.T) {
	plan, _ := newPortPlan(PortRange{61000, 61999}, 2)
	var dir flowDirectory
	s0, s1 := newSteerer(0, plan, &dir), newSteerer(1, plan, &dir)
	live := map[flowKey]bool{}
	s0.needsClaim = func(f flowKey) bool { return live[f] }
	flood := func(i int) flowKey {
		return flowKey{localAddr: m4([4]byte{10, 0, 0, 1}), remoteAddr: m4([4]byte{172, 16, byte(i >> 8), byte(i)}), localPort: 80, remotePort: uint16(i)}
	}
	const t0 = int64(1_000_000_000)
	for i := 0; i < maxClaimedFlows; i++ {
		syn := segmentInfo{flow: flood(i), flags: tcpFlagSyn, seq: 1}
		if o := s0.ownerOf(&syn, t0); o != 0 {
			t.Fatalf("flood SYN %d owned by %d", i, o)
		}
	}
	legit := flowKey{localAddr: m4([4]byte{10, 0, 0, 1}), remoteAddr: m4([4]byte{10, 0, 0, 2}), localPort: 80, remotePort: 40000}
	syn := segmentInfo{flow: legit, flags: tcpFlagSyn, seq: 7}
	ack := segmentInfo{flow: legit, flags: tcpFlagAck}

	// Every claim younger than evictAge: nothing to forget.
	s0.ownerOf(&syn, t0+int64(evictAge)/2)
	if _, ok := dir.owner(legit); ok || s0.untracked.Load() != 1 {
		t.Fatalf("young table: legit SYN recorded %v, untracked %d; want not recorded, 1", ok, s0.untracked.Load())
	}
	// Claims of live flows are never forgotten.
	for i := 0; i < maxClaimedFlows; i++ {
		live[flood(i)] = true
	}
	s0.ownerOf(&syn, t0+2*int64(evictAge))
	if _, ok := dir.owner(legit); ok || s0.evicted.Load() != 0 {
		t.Fatalf("live table: legit SYN recorded %v, %d evicted", ok, s0.evicted.Load())
	}
	// Old claims without an endpoint make room: the legit flow is claimed
	// and its ACK on the other queue goes to shard 0.
	clear(live)
	s0.ownerOf(&syn, t0+2*int64(evictAge))
	if o, ok := dir.owner(legit); !ok || o != 0 {
		t.Fatalf("legit SYN after the flood's claims aged: owner %d, %v; want 0", o, ok)
	}
	if o := s1.ownerOf(&ack, t0+2*int64(evictAge)); o != 0 {
		t.Fatalf("legit ACK on shard 1 owned by %d, want 0", o)
	}
	if n := len(s0.claimed); n != maxClaimedFlows {
		t.Fatalf("table holds %d claims, want it kept at %d", n, maxClaimedFlows)
	}
	if s0.evicted.Load() != 1 {
		t.Fatalf("%d claims evicted, want 1", s0.evicted.Load())
	}
}

// TestSteererFullTableRecordedFlow: a SYN that finds its shard's claim
// table full of young claims, and so is not recorded, still honours the
// directory: a retransmission of a handshake another shard recorded goes
// to that shard, and a new incarnation of a recorded 4-tuple (a client
// reusing its port) removes the old claim, so that the new connection's
// later segments are not handed to the old one's shard (which resets
// them: the lab's close phase lost requests this way once the clients
// reused their ports).
func TestSteererFullTableRecordedFlow(t *testing.T) {
	plan, _ := newPortPlan(PortRange{61000, 61999}, 2)
	var dir flowDirectory
	s0, s1 := newSteerer(0, plan, &dir), newSteerer(1, plan, &dir)
	const t0 = int64(1_000_000_000)
	for i := 0; i < maxClaimedFlows; i++ {
		f := flowKey{localAddr: m4([4]byte{10, 0, 0, 1}), remoteAddr: m4([4]byte{172, 16, byte(i >> 8), byte(i)}), localPort: 80, remotePort: uint16(i)}
		s1.ownerOf(&segmentInfo{flow: f, flags: tcpFlagSyn, seq: 1}, t0)
	}
	flow := flowKey{localAddr: m4([4]byte{10, 0, 0, 1}), remoteAddr: m4([4]byte{10, 0, 0, 2}), localPort: 80, remotePort: 40000}
	ack := segmentInfo{flow: flow, flags: tcpFlagAck}
	if o := s0.ownerOf(&segmentInfo{flow: flow, flags: tcpFlagSyn, seq: 7}, t0); o != 0 {
		t.Fatalf("SYN on shard 0 owned by %d", o)
	}
	// The retransmitted SYN arrives on the full shard's queue.
	if o := s1.ownerOf(&segmentInfo{flow: flow, flags: tcpFlagSyn, seq: 7}, t0); o != 0 {
		t.Fatalf("retransmitted SYN on the full shard 1 owned by %d, want 0 (its recorded owner)", o)
	}
	if n := s1.untracked.Load(); n != 0 {
		t.Fatalf("retransmission of a recorded handshake counted untracked (%d)", n)
	}
	// The client reuses the port later: a new ISN, on the full shard.
	if o := s1.ownerOf(&segmentInfo{flow: flow, flags: tcpFlagSyn, seq: 99999}, t0+1); o != 1 {
		t.Fatalf("new incarnation on shard 1 owned by %d, want 1", o)
	}
	if n := s1.untracked.Load(); n != 1 {
		t.Fatalf("untracked %d, want 1", n)
	}
	if o, ok := dir.owner(flow); ok {
		t.Fatalf("directory still names shard %d for the old incarnation", o)
	}
	if o := s1.ownerOf(&ack, t0+2); o != 1 {
		t.Fatalf("ACK of the new incarnation on shard 1 owned by %d, want 1", o)
	}
	// Shard 0 forgets its old claim when it sweeps, and leaves the
	// directory alone.
	if n := s0.sweep(t0+int64(flowGrace)+10, 100, func(flowKey) bool { return false }); n != 1 {
		t.Fatalf("shard 0 swept %d claims, want 1", n)
	}
}

// icmp6TooBigFrame is the ICMPv6 packet-too-big a router sends back about
// seg (an IPv6 frame), quoting its first n bytes.
func icmp6TooBigFrame(seg []byte, router netip.Addr, n int) []byte {
	in := seg[ethHeaderLen:]
	in = in[:min(n, len(in))]
	msg := make([]byte, icmpHdrLen, icmpHdrLen+len(in))
	msg[0] = icmp6PacketTooBig
	binary.BigEndian.PutUint32(msg[4:], 1280)
	msg = append(msg, in...)
	f := make([]byte, ethHeaderLen+ipv6HeaderLen, ethHeaderLen+ipv6HeaderLen+len(msg))
	binary.BigEndian.PutUint16(f[12:], ethTypeIPv6)
	ip := f[ethHeaderLen:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(msg)))
	ip[6], ip[7] = protoICMPv6, 64
	r16, l16 := router.As16(), [16]byte(seg[ethHeaderLen+8:ethHeaderLen+24])
	copy(ip[8:], r16[:])
	copy(ip[24:], l16[:])
	return append(f, msg...)
}

func TestParseICMPError6(t *testing.T) {
	local, remote, router := netip.MustParseAddr("fd00:f5::1"), netip.MustParseAddr("fd00:f6::2"), netip.MustParseAddr("fd00:f5::fe")
	seg := buildFrame6(local, remote, 7700, 54020, tcpFlagAck, 1440)
	want := flowKey{localAddr: local.As16(), remoteAddr: remote.As16(), localPort: 7700, remotePort: 54020}
	for _, n := range []int{44, 1232} { // the quoted header and ports; what fits 1280
		f := icmp6TooBigFrame(seg, router, n)
		if _, ok := parseSegment(f); ok {
			t.Fatal("parseSegment took an ICMPv6 frame")
		}
		info, ok := parseICMPError(f)
		if !ok || info.flow != want || !info.icmp || !info.v6 || info.ipStart != 14 || info.ipLength != len(f)-14 {
			t.Fatalf("quoting %d bytes: ok=%v %+v, want flow %v", n, ok, info, want)
		}
	}
	for name, f := range map[string]func([]byte) []byte{
		"destination unreachable": func(b []byte) []byte { b[14+40] = 1; return b },
		"code 1":                  func(b []byte) []byte { b[14+41] = 1; return b },
		"quoted udp":              func(b []byte) []byte { b[14+48+6] = 17; return b },
		"ports cut":               func(b []byte) []byte { binary.BigEndian.PutUint16(b[18:], 8+40+3); return b[:14+40+8+40+3] },
		"tcp segment":             func([]byte) []byte { return seg },
	} {
		if _, ok := parseICMPError(f(icmp6TooBigFrame(seg, router, 1232))); ok {
			t.Errorf("%s accepted", name)
		}
	}
}

// TestSteererShrinks: once a flood's claims are swept, the claim table is
// rebuilt small (a Go map keeps its buckets when entries are deleted),
// and the claims still live survive the rebuild.
func TestSteererShrinks(t *testing.T) {
	plan, _ := newPortPlan(PortRange{61000, 61999}, 1)
	var dir flowDirectory
	s := newSteerer(0, plan, &dir)
	flow := func(i int) flowKey {
		return flowKey{localAddr: m4([4]byte{10, 0, 0, 1}), remoteAddr: m4([4]byte{172, 16, byte(i >> 8), byte(i)}), localPort: 80, remotePort: uint16(i)}
	}
	for i := 0; i < maxClaimedFlows; i++ {
		s.ownerOf(&segmentInfo{flow: flow(i), flags: tcpFlagSyn, seq: 1}, 1)
	}
	const keep = 10 // live flows: never swept
	alive := func(f flowKey) bool { return f.remotePort < keep }
	now := int64(flowGrace) + 2
	for pass := 0; pass < 200 && len(s.claimed) > keep; pass++ {
		s.sweep(now, sweepBudgetForTest, alive)
	}
	if len(s.claimed) != keep {
		t.Fatalf("%d claims left, want the %d live ones", len(s.claimed), keep)
	}
	if s.claimedPeak >= shrinkMin {
		t.Fatalf("claim table not rebuilt: peak %d with %d claims", s.claimedPeak, len(s.claimed))
	}
	for i := 0; i < keep; i++ {
		if o, ok := dir.owner(flow(i)); !ok || o != 0 {
			t.Fatalf("live flow %d lost its owner in the rebuild", i)
		}
		if _, ok := s.claimed[flow(i)]; !ok {
			t.Fatalf("live flow %d no longer claimed after the rebuild", i)
		}
	}
	// A small table is not rebuilt at every sweep.
	m := reflect.ValueOf(s.claimed).UnsafePointer()
	s.sweep(now, sweepBudgetForTest, alive)
	if reflect.ValueOf(s.claimed).UnsafePointer() != m {
		t.Fatal("small table rebuilt by a sweep")
	}
}

const sweepBudgetForTest = 4096
