package afxdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf/asm"
)

var (
	ownedAddr = netip.MustParseAddr("198.18.0.1")
	otherAddr = netip.MustParseAddr("198.18.0.7")
	peerAddr  = netip.MustParseAddr("198.18.0.2")

	ownedAddr6 = netip.MustParseAddr("fd00:f5::1")
	otherAddr6 = netip.MustParseAddr("fe80::1")
	peerAddr6  = netip.MustParseAddr("fd00:f5::2")
)

// testTables is the Go model of the maps that configureSteering sets.
func testTables() *steerTables {
	return &steerTables{
		addrs: map[[4]byte]bool{ownedAddr.As4(): true, otherAddr.As4(): true},
		ports: map[portKey]bool{
			{Addr: ownedAddr.As4(), Port: [2]byte{0x27, 0x0f}}: true, // 9999 on .1 only
			{Port: [2]byte{0, 80}}:                             true, // 80 on any owned
		},
		addrs6: map[[16]byte]bool{ownedAddr6.As16(): true, otherAddr6.As16(): true},
		ports6: map[portKey6]bool{
			{Addr: ownedAddr6.As16(), Port: [2]byte{0x27, 0x0f}}: true, // 9999 on fd00:f5::1 only
			{Port: [2]byte{0, 80}}:                               true, // 80 on any owned IPv6
			{Port: [2]byte{0x1f, 0x90}}:                          true, // 8080 on any owned IPv6 (not IPv4)
		},
		first: 40000, last: 40999,
	}
}

// genFlags returns TCP flags for a generated segment: mostly a plain SYN,
// and the combinations a shedding queue must tell from it.
func genFlags(rng *rand.Rand) uint8 {
	return []uint8{tcpFlagSyn, tcpFlagSyn, tcpFlagSyn | tcpFlagAck, tcpFlagAck, tcpFlagSyn | 0x01, tcpFlagAck | 0x08, tcpFlagSyn | 0xc0, 0x04, 0xff}[rng.IntN(9)]
}

// genFrame6 returns a random IPv6 frame near the decision boundaries.
func genFrame6(rng *rand.Rand) []byte {
	addrs := []netip.Addr{ownedAddr6, otherAddr6, peerAddr6, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:198.18.0.1")}
	ports := []uint16{9999, 80, 8080, 39999, 40000, 40500, 40999, 41000, 1, 65535}
	f := frameSpec{
		dst:   netip.AddrPortFrom(addrs[rng.IntN(len(addrs))], ports[rng.IntN(len(ports))]),
		src:   netip.AddrPortFrom(peerAddr6, uint16(rng.IntN(65536))),
		flags: genFlags(rng),
	}
	if rng.IntN(4) == 0 {
		// Extension headers (hop-by-hop, routing, fragment), ICMPv6
		// (neighbour discovery), UDP, no next header.
		f.proto = []uint8{0, 43, 44, 58, 58, 17, 59}[rng.IntN(7)]
		if f.proto == 0 {
			f.proto = 255 // build6 takes 0 for TCP; hop-by-hop is patched below
		}
	}
	b := f.build6()
	if f.proto == 255 {
		b[ethLen+6] = 0
	}
	if rng.IntN(5) == 0 {
		// An ICMPv6 error quoting a segment fsstack (or someone) sent.
		in := f
		in.src, in.dst = f.dst, f.src
		in.proto = []uint8{0, 0, 0, 17}[rng.IntN(4)]
		quoted := in.build6()[ethLen:]
		if rng.IntN(2) == 0 {
			quoted = quoted[:min(len(quoted), ip6HdrLen+rng.IntN(8))]
		}
		typ := [][2]byte{{2, 0}, {2, 0}, {2, 0}, {1, 4}, {3, 0}, {2, 1}}[rng.IntN(6)]
		b = icmp6Error(f.src.Addr(), f.dst.Addr(), typ[0], typ[1], quoted).build6()
	}
	switch rng.IntN(8) {
	case 0:
		b = b[:rng.IntN(len(b)+1)] // truncate
	case 1:
		b[14] = byte(rng.IntN(256)) // version / traffic class
	case 2:
		b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
	}
	return b
}

// genFrame returns a random frame near the decision boundaries: IPv4,
// and one in three IPv6.
func genFrame(rng *rand.Rand) []byte {
	if rng.IntN(3) == 0 {
		return genFrame6(rng)
	}
	addrs := []netip.Addr{ownedAddr, otherAddr, peerAddr, netip.MustParseAddr("10.0.0.1")}
	ports := []uint16{9999, 80, 8080, 39999, 40000, 40500, 40999, 41000, 1, 65535}
	f := frameSpec{
		dst:   netip.AddrPortFrom(addrs[rng.IntN(len(addrs))], ports[rng.IntN(len(ports))]),
		src:   netip.AddrPortFrom(peerAddr, uint16(rng.IntN(65536))),
		flags: genFlags(rng),
	}
	switch rng.IntN(10) {
	case 0:
		f.etherType = []uint16{0x86dd, 0x0806, 0x8100}[rng.IntN(3)]
	case 1:
		f.proto = []uint8{17, 1, 132}[rng.IntN(3)]
	case 2:
		f.fragOff = []uint16{0x2000, 0x0001, 0x4000, 0x1fff, 0x8000}[rng.IntN(5)]
	case 3:
		f.ipOptWords = rng.IntN(11)
	}
	if rng.IntN(5) == 0 {
		// An ICMP error quoting a segment fsstack (or someone) sent.
		in := f
		in.src, in.dst = f.dst, f.src
		in.proto = []uint8{protoTCP, protoTCP, protoTCP, 17}[rng.IntN(4)]
		in.fragOff = []uint16{0, 0, 0x4000, 0x2000, 0x0010}[rng.IntN(5)]
		in.ipOptWords = []int{0, 0, 1, 10}[rng.IntN(4)]
		typ := [][2]byte{{3, 4}, {3, 4}, {3, 4}, {3, 3}, {11, 0}}[rng.IntN(5)]
		quoted := in.build()[ethLen:]
		// ICMP quotes at least the IP header and 8 bytes; Linux more.
		if rng.IntN(2) == 0 {
			quoted = quoted[:min(len(quoted), 4*(5+in.ipOptWords)+rng.IntN(12))]
		}
		f = icmpError(f.src.Addr(), f.dst.Addr(), typ[0], typ[1], quoted)
		f.fragOff = []uint16{0, 0, 0, 0x2000}[rng.IntN(4)]
	}
	b := f.build()
	switch rng.IntN(8) {
	case 0:
		b = b[:rng.IntN(len(b)+1)] // truncate
	case 1:
		b[14] = byte(rng.IntN(256)) // version / IHL
	case 2:
		b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
	}
	return b
}

func TestClassifyTable(t *testing.T) {
	tb := testTables()
	syn := func(dst netip.AddrPort) frameSpec {
		return frameSpec{src: netip.AddrPortFrom(peerAddr, 5555), dst: dst, flags: TCPFlagSYN}
	}
	syn6 := func(dst netip.AddrPort) frameSpec {
		return frameSpec{src: netip.AddrPortFrom(peerAddr6, 5555), dst: dst, flags: TCPFlagSYN}
	}
	ap := netip.AddrPortFrom
	cases := []struct {
		name string
		f    []byte
		want steerVerdict
	}{
		{"owned port", syn(ap(ownedAddr, 9999)).build(), verdictOurs},
		{"port of other addr", syn(ap(otherAddr, 9999)).build(), verdictPass},
		{"any-addr port", syn(ap(otherAddr, 80)).build(), verdictOurs},
		{"unowned port", syn(ap(ownedAddr, 8080)).build(), verdictPass},
		{"unowned addr", syn(ap(peerAddr, 9999)).build(), verdictPass},
		{"ephemeral first", syn(ap(ownedAddr, 40000)).build(), verdictOurs},
		{"ephemeral last", syn(ap(ownedAddr, 40999)).build(), verdictOurs},
		{"below ephemeral", syn(ap(ownedAddr, 39999)).build(), verdictPass},
		{"above ephemeral", syn(ap(ownedAddr, 41000)).build(), verdictPass},
		{"ip options", func() []byte { f := syn(ap(ownedAddr, 9999)); f.ipOptWords = 10; return f.build() }(), verdictOurs},
		{"more fragments", func() []byte { f := syn(ap(ownedAddr, 9999)); f.fragOff = 0x2000; return f.build() }(), verdictPass},
		{"fragment offset", func() []byte { f := syn(ap(ownedAddr, 9999)); f.fragOff = 0x0010; return f.build() }(), verdictPass},
		{"don't fragment", func() []byte { f := syn(ap(ownedAddr, 9999)); f.fragOff = 0x4000; return f.build() }(), verdictOurs},
		{"udp", func() []byte { f := syn(ap(ownedAddr, 9999)); f.proto = 17; return f.build() }(), verdictPass},
		{"arp", func() []byte { f := syn(ap(ownedAddr, 9999)); f.etherType = 0x0806; return f.build() }(), verdictPass},
		{"short ethernet", make([]byte, 13), verdictMalformed},
		{"short ip", syn(ap(ownedAddr, 9999)).build()[:33], verdictMalformed},
		{"short tcp", syn(ap(ownedAddr, 9999)).build()[:14+20+19], verdictMalformed},
		{"short tcp after options", func() []byte { f := syn(ap(ownedAddr, 9999)); f.ipOptWords = 4; return f.build()[:14+36+10] }(), verdictMalformed},
		{"ihl 4", func() []byte { b := syn(ap(ownedAddr, 9999)).build(); b[14] = 0x44; return b }(), verdictMalformed},
		{"version 6", func() []byte { b := syn(ap(ownedAddr, 9999)).build(); b[14] = 0x65; return b }(), verdictMalformed},

		// ICMP errors quoting a segment the owned side sent (src owned).
		{"frag needed, owned flow", fragNeeded(sent(ap(ownedAddr, 9999))), verdictOurs},
		{"frag needed, ephemeral flow", fragNeeded(sent(ap(ownedAddr, 40500))), verdictOurs},
		{"frag needed, any-addr port", fragNeeded(sent(ap(otherAddr, 80))), verdictOurs},
		{"frag needed, unowned port", fragNeeded(sent(ap(ownedAddr, 8080))), verdictPass},
		{"frag needed, unowned addr", fragNeeded(sent(ap(peerAddr, 9999))), verdictPass},
		{"frag needed, quoted options", func() []byte { f := sent(ap(ownedAddr, 9999)); f.ipOptWords = 10; return fragNeeded(f) }(), verdictOurs},
		{"frag needed, quoted first fragment", func() []byte { f := sent(ap(ownedAddr, 9999)); f.fragOff = 0x2000; return fragNeeded(f) }(), verdictOurs},
		{"frag needed, quoted later fragment", func() []byte { f := sent(ap(ownedAddr, 9999)); f.fragOff = 0x0010; return fragNeeded(f) }(), verdictPass},
		{"frag needed, quoted udp", func() []byte { f := sent(ap(ownedAddr, 9999)); f.proto = 17; return fragNeeded(f) }(), verdictPass},
		{"frag needed, 8 bytes quoted", func() []byte { return fragNeededQuoting(sent(ap(ownedAddr, 9999)), 28) }(), verdictOurs},
		{"frag needed, ports cut", func() []byte { return fragNeededQuoting(sent(ap(ownedAddr, 9999)), 23) }(), verdictPass},
		{"frag needed, quoted header cut", func() []byte { return fragNeededQuoting(sent(ap(ownedAddr, 9999)), 19) }(), verdictPass},
		{"port unreachable", icmpError(peerAddr, ownedAddr, 3, 3, sent(ap(ownedAddr, 9999)).build()[ethLen:]).build(), verdictPass},
		{"time exceeded", icmpError(peerAddr, ownedAddr, 11, 0, sent(ap(ownedAddr, 9999)).build()[ethLen:]).build(), verdictPass},
		{"echo request", icmpError(peerAddr, ownedAddr, 8, 0, nil).build(), verdictPass},

		// IPv6.
		{"v6 owned port", syn6(ap(ownedAddr6, 9999)).build(), verdictOurs},
		{"v6 port of other addr", syn6(ap(otherAddr6, 9999)).build(), verdictPass},
		{"v6 any-addr port", syn6(ap(otherAddr6, 80)).build(), verdictOurs},
		{"v6 any-addr port, v6 only", syn6(ap(ownedAddr6, 8080)).build(), verdictOurs},
		{"v4 port owned on v6 only", syn(ap(ownedAddr, 8080)).build(), verdictPass},
		{"v6 unowned port", syn6(ap(ownedAddr6, 8081)).build(), verdictPass},
		{"v6 unowned addr", syn6(ap(peerAddr6, 80)).build(), verdictPass},
		{"v6 v4 addr's twin", syn6(ap(netip.MustParseAddr("::ffff:198.18.0.1"), 80)).build(), verdictPass},
		{"v6 ephemeral first", syn6(ap(ownedAddr6, 40000)).build(), verdictOurs},
		{"v6 ephemeral last", syn6(ap(ownedAddr6, 40999)).build(), verdictOurs},
		{"v6 above ephemeral", syn6(ap(ownedAddr6, 41000)).build(), verdictPass},
		{"v6 icmpv6 (neighbour solicitation)", func() []byte { f := syn6(ap(ownedAddr6, 80)); f.proto = 58; return f.build() }(), verdictPass},
		{"v6 fragment header", func() []byte { f := syn6(ap(ownedAddr6, 80)); f.proto = 44; return f.build() }(), verdictPass},
		{"v6 hop-by-hop", func() []byte { b := syn6(ap(ownedAddr6, 80)).build(); b[ethLen+6] = 0; return b }(), verdictPass},
		{"v6 udp", func() []byte { f := syn6(ap(ownedAddr6, 80)); f.proto = 17; return f.build() }(), verdictPass},
		{"v6 short header", syn6(ap(ownedAddr6, 80)).build()[:ethLen+39], verdictMalformed},
		{"v6 short tcp", syn6(ap(ownedAddr6, 80)).build()[:ethLen+40+19], verdictMalformed},
		{"v6 version 4", func() []byte { b := syn6(ap(ownedAddr6, 80)).build(); b[14] = 0x45; return b }(), verdictMalformed},
		{"v4 ethertype, v6 packet", func() []byte { f := syn6(ap(ownedAddr6, 80)); f.etherType = 0x0800; return f.build() }(), verdictMalformed},

		// ICMPv6 errors quoting a segment the owned side sent.
		{"v6 packet too big, owned flow", tooBig(sent6(ap(ownedAddr6, 9999)), 1<<16), verdictOurs},
		{"v6 packet too big, ephemeral flow", tooBig(sent6(ap(ownedAddr6, 40500)), 1<<16), verdictOurs},
		{"v6 packet too big, any-addr port", tooBig(sent6(ap(otherAddr6, 80)), 1<<16), verdictOurs},
		{"v6 packet too big, unowned port", tooBig(sent6(ap(ownedAddr6, 8081)), 1<<16), verdictPass},
		{"v6 packet too big, unowned addr", tooBig(sent6(ap(peerAddr6, 9999)), 1<<16), verdictPass},
		{"v6 packet too big, quoted udp", func() []byte { f := sent6(ap(ownedAddr6, 9999)); f.proto = 17; return tooBig(f, 1<<16) }(), verdictPass},
		{"v6 packet too big, ports quoted", tooBig(sent6(ap(ownedAddr6, 9999)), ip6HdrLen+4), verdictOurs},
		{"v6 packet too big, ports cut", tooBig(sent6(ap(ownedAddr6, 9999)), ip6HdrLen+3), verdictPass},
		{"v6 packet too big, code 1", icmp6Error(peerAddr6, ownedAddr6, 2, 1, sent6(ap(ownedAddr6, 9999)).build()[ethLen:]).build(), verdictPass},
		{"v6 destination unreachable", icmp6Error(peerAddr6, ownedAddr6, 1, 4, sent6(ap(ownedAddr6, 9999)).build()[ethLen:]).build(), verdictPass},
		{"v6 time exceeded", icmp6Error(peerAddr6, ownedAddr6, 3, 0, sent6(ap(ownedAddr6, 9999)).build()[ethLen:]).build(), verdictPass},

		{"frag needed, outer fragment", func() []byte {
			f := icmpError(peerAddr, ownedAddr, 3, 4, sent(ap(ownedAddr, 9999)).build()[ethLen:])
			f.fragOff = 0x2000
			return f.build()
		}(), verdictPass},
	}
	for _, c := range cases {
		if got := classify(c.f, tb); got != c.want {
			t.Errorf("%s: classify = %v, want %v", c.name, got, c.want)
		}
	}
}

// sent is a segment the local side local sent to the peer.
func sent(local netip.AddrPort) frameSpec {
	return frameSpec{src: local, dst: netip.AddrPortFrom(peerAddr, 5555), flags: TCPFlagACK, payload: make([]byte, 100)}
}

// sent6 is a segment the IPv6 local side local sent to the peer.
func sent6(local netip.AddrPort) frameSpec {
	return frameSpec{src: local, dst: netip.AddrPortFrom(peerAddr6, 5555), flags: TCPFlagACK, payload: make([]byte, 100)}
}

// icmp6Error is an ICMPv6 message from src to dst quoting quoted (an IPv6
// packet); its checksum is left zero (the steering program does not read
// it).
func icmp6Error(src, dst netip.Addr, typ, code byte, quoted []byte) frameSpec {
	msg := make([]byte, icmpHdrLen, icmpHdrLen+len(quoted))
	msg[0], msg[1] = typ, code
	binary.BigEndian.PutUint32(msg[4:], 1280) // packet too big: the MTU
	msg = append(msg, quoted...)
	return frameSpec{src: netip.AddrPortFrom(src, 0), dst: netip.AddrPortFrom(dst, 0), proto: protoICMPv6, payload: msg}
}

// tooBig is the "packet too big" a router sends back to the sender of
// seg, quoting its first n bytes.
func tooBig(seg frameSpec, n int) []byte {
	ip := seg.build()[ethLen:]
	return icmp6Error(peerAddr6, seg.src.Addr(), 2, 0, ip[:min(n, len(ip))]).build()
}

// icmpError is an ICMP message from src to dst quoting quoted (an IPv4
// packet, as much of it as the sender quotes).
func icmpError(src, dst netip.Addr, typ, code byte, quoted []byte) frameSpec {
	msg := make([]byte, icmpHdrLen, icmpHdrLen+len(quoted))
	msg[0], msg[1] = typ, code
	msg[6], msg[7] = 0x05, 0x00 // next-hop MTU 1280
	msg = append(msg, quoted...)
	binary.BigEndian.PutUint16(msg[2:], fold(checksum(0, msg)))
	return frameSpec{src: netip.AddrPortFrom(src, 0), dst: netip.AddrPortFrom(dst, 0), proto: protoICMP, payload: msg}
}

// fragNeeded is the "fragmentation needed" error a router sends back to
// the sender of seg, quoting all of it.
func fragNeeded(seg frameSpec) []byte { return fragNeededQuoting(seg, 1<<16) }

// fragNeededQuoting quotes the first n bytes of seg's IPv4 packet.
func fragNeededQuoting(seg frameSpec, n int) []byte {
	ip := seg.build()[ethLen:]
	return icmpError(peerAddr, seg.src.Addr(), 3, 4, ip[:min(n, len(ip))]).build()
}

func TestParseTCP4(t *testing.T) {
	f := frameSpec{src: netip.MustParseAddrPort("198.18.0.2:5555"), dst: netip.MustParseAddrPort("198.18.0.1:9999"),
		flags: TCPFlagSYN | TCPFlagACK, ipOptWords: 2, payload: []byte("hello")}
	b := f.build()
	info, ok := ParseTCP4(b)
	if !ok {
		t.Fatal("ParseTCP4 rejected a valid frame")
	}
	if info.Src != f.src || info.Dst != f.dst || info.Flags != TCPFlagSYN|TCPFlagACK || info.IPHeaderLen != 28 ||
		string(b[info.PayloadOff:info.PayloadOff+info.PayloadLen]) != "hello" || info.Seq != 1000 {
		t.Fatalf("ParseTCP4 = %+v", info)
	}
	for i := 0; i < len(b)-5; i++ {
		if _, ok := ParseTCP4(b[:i]); ok {
			t.Fatalf("truncated to %d bytes accepted", i)
		}
	}
}

// FuzzParseTCP4 checks ParseTCP4's invariants and that it agrees with the
// steering model; with root it also compares the model with the real BPF
// program (see steering_linux_test.go: fuzzSteeringProgram).
func FuzzParseTCP4(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 64; i++ {
		f.Add(genFrame(rng))
	}
	tb := testTables()
	f.Fuzz(func(t *testing.T, b []byte) {
		info, ok := ParseTCP4(b)
		v := classify(b, tb)
		if ok {
			if info.PayloadOff > len(b) || info.PayloadOff+info.PayloadLen > len(b) || info.PayloadLen < 0 {
				t.Fatalf("offsets outside the frame: %+v (len %d)", info, len(b))
			}
			if info.IPHeaderLen < 20 || info.IPHeaderLen > 60 || info.TCPHeaderLen < 20 || info.TCPHeaderLen > 60 {
				t.Fatalf("header lengths %+v", info)
			}
			if v == verdictMalformed {
				t.Fatalf("parsed frame classified malformed: %+v", info)
			}
			k := portKey{Addr: info.Dst.Addr().As4()}
			binary.BigEndian.PutUint16(k.Port[:], info.Dst.Port())
			owned := tb.addrs[k.Addr] && (tb.ports[k] || tb.ports[portKey{Port: k.Port}] ||
				info.Dst.Port() >= tb.first && info.Dst.Port() <= tb.last)
			if owned != (v == verdictOurs) {
				t.Fatalf("parsed %+v: owned %v but classify %v", info, owned, v)
			}
		}
		if fuzzSteeringProgram != nil {
			fuzzSteeringProgram(t, b, v)
		}
	})
}

// fuzzSteeringProgram, when set (Linux, root), runs b through the loaded
// steering program and checks its verdict against want.
var fuzzSteeringProgram func(t *testing.T, b []byte, want steerVerdict)

func TestSteeringOptionErrors(t *testing.T) {
	for _, q := range []int{0, -1, 1<<16 + 1} {
		if _, err := steeringSpec(SteeringOptions{Queues: q}); err == nil {
			t.Errorf("Queues %d accepted", q)
		}
	}
	var qe *QueueError
	err := error(&QueueError{Ifname: "eth1", Have: 2, Want: 4})
	if !errors.Is(err, ErrQueues) || !errors.As(err, &qe) {
		t.Fatal("QueueError does not match ErrQueues")
	}
	if e := errNotSupported("x", errors.New("y")); !errors.Is(e, ErrNotSupported) {
		t.Fatal("errNotSupported does not match ErrNotSupported")
	}
}

func (v steerVerdict) String() string {
	return [...]string{"pass", "malformed", "ours", "shed"}[v]
}

// TestSteeringSpec checks the program and map specs without a kernel:
// every map reference names a map of the spec, every jump resolves, and
// the map shapes match the Go types that fill them.
func TestSteeringSpec(t *testing.T) {
	spec, err := steeringSpec(SteeringOptions{Queues: 8})
	if err != nil {
		t.Fatal(err)
	}
	prog := spec.Programs["steer"]
	refs := map[string]bool{}
	for _, ins := range prog.Instructions {
		if r := ins.Reference(); r != "" && ins.IsLoadFromMap() {
			if spec.Maps[r] == nil {
				t.Errorf("instruction %v references unknown map %q", ins, r)
			}
			refs[r] = true
		}
	}
	for name := range spec.Maps {
		if !refs[name] {
			t.Errorf("map %s is never used by the program", name)
		}
	}
	// Jumps resolve (Marshal fails on a dangling label); map references
	// stay symbolic until load.
	var buf bytes.Buffer
	insns := append(asm.Instructions(nil), prog.Instructions...)
	for i := range insns {
		if insns[i].IsLoadFromMap() {
			insns[i] = insns[i].WithReference("")
		}
	}
	if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if n := len(prog.Instructions); n > 250 {
		t.Errorf("program has %d instructions; it was about 170", n)
	}
	if m := spec.Maps["xsks"]; m.MaxEntries != 8 {
		t.Errorf("xsks has %d entries, want 8", m.MaxEntries)
	}
	if m := spec.Maps["ports"]; m.KeySize != 8 || binary.Size(portKey{}) != 8 {
		t.Errorf("ports key %d bytes, portKey %d", m.KeySize, binary.Size(portKey{}))
	}
	if m := spec.Maps["ports6"]; m.KeySize != 20 || binary.Size(portKey6{}) != 20 {
		t.Errorf("ports6 key %d bytes, portKey6 %d", m.KeySize, binary.Size(portKey6{}))
	}
	if m := spec.Maps["addrs6"]; m.KeySize != 16 {
		t.Errorf("addrs6 key %d bytes, want 16", m.KeySize)
	}
	if m := spec.Maps["cfg"]; m.ValueSize != uint32(binary.Size(rangeValue{})) {
		t.Errorf("cfg value %d bytes, rangeValue %d", m.ValueSize, binary.Size(rangeValue{}))
	}
	if m := spec.Maps["shed"]; m.MaxEntries != 8 || m.ValueSize != shedValueSize || binary.Size(shedValue{}) != shedValueSize {
		t.Errorf("shed has %d entries of %d bytes, want 8 of %d (shedValue %d)", m.MaxEntries, m.ValueSize, shedValueSize, binary.Size(shedValue{}))
	}
	if m := spec.Maps["stats"]; m.MaxEntries != numStats {
		t.Errorf("stats has %d entries, want %d", m.MaxEntries, numStats)
	}
}
