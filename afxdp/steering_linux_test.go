//go:build linux

package afxdp

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
)

// configureSteering sets the maps to match testTables.
func configureSteering(t testing.TB, s *Steering) {
	t.Helper()
	for _, err := range []error{
		s.AddAddr(ownedAddr),
		s.AddAddr(otherAddr),
		s.AddPort(ownedAddr, 9999),
		s.AddPort(netip.IPv4Unspecified(), 80),
		s.AddAddr(ownedAddr6),
		s.AddAddr(otherAddr6),
		s.AddPort(ownedAddr6, 9999),
		s.AddPort(netip.IPv6Unspecified(), 80),
		s.AddPort(netip.IPv6Unspecified(), 8080),
		s.SetEphemeralRange(40000, 40999),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestSteeringMaps(t *testing.T) {
	requireRoot(t)
	s, err := LoadSteering(SteeringOptions{Queues: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	configureSteering(t, s)

	var one uint8
	if err := s.addrs.Lookup(ownedAddr.As4(), &one); err != nil || one != 1 {
		t.Fatalf("addrs[%v] = %d, %v", ownedAddr, one, err)
	}
	if err := s.ports.Lookup(portKey{Addr: ownedAddr.As4(), Port: [2]byte{0x27, 0x0f}}, &one); err != nil {
		t.Fatalf("ports[%v:9999]: %v", ownedAddr, err)
	}
	if err := s.ports.Lookup(portKey{Port: [2]byte{0, 80}}, &one); err != nil {
		t.Fatalf("ports[0:80]: %v", err)
	}
	var r rangeValue
	if err := s.cfg.Lookup(uint32(0), &r); err != nil || r != (rangeValue{40000, 40999}) {
		t.Fatalf("cfg = %+v, %v", r, err)
	}

	tables, err := s.Tables()
	if err != nil {
		t.Fatal(err)
	}
	want := SteeringTables{
		Addrs: []netip.Addr{ownedAddr, otherAddr, ownedAddr6, otherAddr6},
		Ports: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:80"), netip.MustParseAddrPort("198.18.0.1:9999"),
			netip.MustParseAddrPort("[::]:80"), netip.MustParseAddrPort("[::]:8080"), netip.MustParseAddrPort("[fd00:f5::1]:9999")},
		EphemeralFirst: 40000, EphemeralLast: 40999,
	}
	if !reflect.DeepEqual(tables, want) {
		t.Fatalf("Tables() = %+v, want %+v", tables, want)
	}

	if err := s.DelPort(ownedAddr, 9999); err != nil {
		t.Fatal(err)
	}
	if err := s.ports.Lookup(portKey{Addr: ownedAddr.As4(), Port: [2]byte{0x27, 0x0f}}, &one); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("port still present after DelPort: %v", err)
	}
	if err := s.DelAddr(otherAddr); err != nil {
		t.Fatal(err)
	}
	if err := s.addrs.Lookup(otherAddr.As4(), &one); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("address still present after DelAddr: %v", err)
	}
	if err := s.addrs6.Lookup(ownedAddr6.As16(), &one); err != nil || one != 1 {
		t.Fatalf("addrs6[%v] = %d, %v", ownedAddr6, one, err)
	}
	if err := s.ports6.Lookup(portKey6{Port: [2]byte{0, 80}}, &one); err != nil {
		t.Fatalf("ports6[[::]:80]: %v", err)
	}
	if err := s.DelPort(ownedAddr6, 9999); err != nil {
		t.Fatal(err)
	}
	if err := s.ports6.Lookup(portKey6{Addr: ownedAddr6.As16(), Port: [2]byte{0x27, 0x0f}}, &one); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("IPv6 port still present after DelPort: %v", err)
	}
	// A zone is not part of the key.
	if err := s.DelAddr(otherAddr6.WithZone("eth0")); err != nil {
		t.Fatal(err)
	}
	if err := s.addrs6.Lookup(otherAddr6.As16(), &one); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("IPv6 address still present after DelAddr: %v", err)
	}
	// Deleting what is not there is fine.
	if err := s.DelPort(ownedAddr, 9999); err != nil {
		t.Fatal(err)
	}
	if err := s.DelAddr(otherAddr); err != nil {
		t.Fatal(err)
	}

	for name, err := range map[string]error{
		"zero addr":       s.AddAddr(netip.IPv4Unspecified()),
		"zero ipv6 addr":  s.AddAddr(netip.IPv6Unspecified()),
		"invalid addr":    s.AddAddr(netip.Addr{}),
		"port 0":          s.AddPort(ownedAddr, 0),
		"ipv6 port 0":     s.AddPort(ownedAddr6, 0),
		"range reversed":  s.SetEphemeralRange(5, 4),
		"range half zero": s.SetEphemeralRange(0, 4),
		"queue too big":   s.SetSocket(4, nil),
		"queue negative":  s.SetSocket(-1, nil),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := s.SetEphemeralRange(0, 0); err != nil {
		t.Fatalf("disable range: %v", err)
	}
	if err := s.SetSocket(3, nil); err != nil {
		t.Fatalf("clearing an empty queue: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Attach(1, AttachAuto); err == nil {
		t.Fatal("Attach after Close succeeded")
	}
}

// runSteering runs b through the program (BPF_PROG_TEST_RUN) and returns
// what the counters say it decided. There are no sockets, so "ours" shows
// as NoSocket and the return code is always XDP_PASS.
func runSteering(t testing.TB, s *Steering, b []byte) steerVerdict {
	t.Helper()
	before, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	ret, err := s.prog.Run(&ebpf.RunOptions{Data: b})
	if err != nil {
		t.Fatalf("run %d-byte frame: %v", len(b), err)
	}
	after, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	d := SteeringStats{
		Redirected: after.Redirected - before.Redirected,
		Passed:     after.Passed - before.Passed,
		Malformed:  after.Malformed - before.Malformed,
		NoSocket:   after.NoSocket - before.NoSocket,
		Shed:       after.Shed - before.Shed,
	}
	if d == (SteeringStats{Shed: 1}) {
		if ret != xdpDrop {
			t.Fatalf("program counted a shed SYN and returned %d, want XDP_DROP", ret)
		}
		return verdictShed
	}
	if ret != xdpPass {
		t.Fatalf("program returned %d without sockets, want XDP_PASS", ret)
	}
	switch d {
	case SteeringStats{Passed: 1}:
		return verdictPass
	case SteeringStats{Malformed: 1}:
		return verdictMalformed
	case SteeringStats{NoSocket: 1}:
		return verdictOurs
	default:
		t.Fatalf("counter change %+v", d)
	}
	return 0
}

// TestSteeringProgramMatchesModel compares the BPF program with classify
// on generated frames near every boundary.
func TestSteeringProgramMatchesModel(t *testing.T) {
	requireRoot(t)
	s, err := LoadSteering(SteeringOptions{Queues: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	configureSteering(t, s)
	if s.shedMem == nil {
		t.Fatal("the shed map is not memory-mapped on this kernel")
	}
	if _, err := s.gauge(4); err == nil || !strings.Contains(err.Error(), "want 0..3") {
		t.Errorf("gauge for queue 4 of 4: %v, want an error naming the queues", err)
	}
	// The test run delivers on queue 0. Queue 1 has no frame left
	// throughout and must not change a thing.
	g1, err := s.gauge(1)
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Close()
	g1.v.Low, g1.v.Avail = 1, 0
	g0, err := s.gauge(0)
	if err != nil {
		t.Fatal(err)
	}
	defer g0.Close()
	for _, round := range []struct {
		name       string
		low, avail uint64
		shed       bool
	}{
		{"never published", 0, 0, false},
		{"frames left", 512, 1 << 40, false},
		{"none left", 512, 0, true},
		{"off again", 0, 0, false},
	} {
		g0.v.Low, g0.v.Avail, g0.v.Mark = round.low, round.avail, g0.v.Taken
		tb := testTables()
		tb.shed = round.shed
		t.Run(round.name, func(t *testing.T) { matchModel(t, s, tb) })
	}
}

// TestShedGaugeEstimate: the program's estimate of the frames left falls
// with every frame steered to the queue and is reset by Publish.
func TestShedGaugeEstimate(t *testing.T) {
	requireRoot(t)
	s, err := LoadSteering(SteeringOptions{Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	configureSteering(t, s)
	g, err := s.gauge(0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	syn := frameSpec{dst: netip.AddrPortFrom(ownedAddr, 80), src: netip.AddrPortFrom(peerAddr, 1234), flags: tcpFlagSyn}.build()
	ack := frameSpec{dst: netip.AddrPortFrom(ownedAddr, 80), src: netip.AddrPortFrom(peerAddr, 1234), flags: tcpFlagAck}.build()
	// As a shard with 5 free frames would publish.
	g.v.Avail, g.v.Mark, g.v.Low = 5, g.v.Taken, 3
	want := []steerVerdict{verdictOurs, verdictOurs, verdictOurs, verdictShed, verdictShed}
	frames := [][]byte{syn, ack, syn, syn, syn}
	for i, b := range frames {
		if got := runSteering(t, s, b); got != want[i] {
			t.Fatalf("frame %d with %d left: %v, want %v", i, g.Left(), got, want[i])
		}
	}
	if got := g.Left(); got != 2 {
		t.Errorf("%d frames left after three steered, want 2", got)
	}
	if got := runSteering(t, s, ack); got != verdictOurs {
		t.Errorf("an ACK with 2 left: %v, want ours", got)
	}
	if g.Shed() != 2 {
		t.Errorf("%d SYNs shed, want 2", g.Shed())
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Shed != 2 {
		t.Errorf("Stats().Shed %d, want 2", st.Shed)
	}
	g.Stop()
	if got := runSteering(t, s, syn); got != verdictOurs {
		t.Errorf("a SYN once stopped: %v, want ours", got)
	}
	// The gauge outlives the steering's Close (a shard publishes until
	// its loop ends); the mapping goes with the last of them.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	g.v.Avail = 1
	if _, err := s.gauge(1); err == nil {
		t.Error("a gauge from a closed steering")
	}
}

// matchModel runs generated frames through the program and the model.
func matchModel(t *testing.T, s *Steering, tb *steerTables) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	seen := map[steerVerdict]int{}
	icmpOurs, icmp6Ours, v6Ours := 0, 0, 0
	for i := 0; i < 8000; i++ {
		b := genFrame(rng)
		if len(b) < ethLen {
			continue // BPF_PROG_TEST_RUN needs an Ethernet header
		}
		want := classify(b, tb)
		if got := runSteering(t, s, b); got != want {
			t.Fatalf("frame %x (shed %v): program %v, model %v", b, tb.shed, got, want)
		}
		seen[want]++
		ours := want == verdictOurs || want == verdictShed
		if ours && b[12] == 0x86 && b[ethLen+6] == protoICMPv6 {
			icmp6Ours++
		} else if ours && b[12] == 0x86 {
			v6Ours++
		} else if ours && b[ethLen+9] == protoICMP {
			icmpOurs++
		}
	}
	if icmpOurs < 20 {
		t.Errorf("only %d ICMP errors for owned flows: generator too narrow", icmpOurs)
	}
	if icmp6Ours < 10 {
		t.Errorf("only %d ICMPv6 errors for owned flows: generator too narrow", icmp6Ours)
	}
	if v6Ours < 50 {
		t.Errorf("only %d IPv6 frames steered: generator too narrow", v6Ours)
	}
	verdicts := []steerVerdict{verdictPass, verdictMalformed, verdictOurs}
	if tb.shed {
		verdicts = append(verdicts, verdictShed)
	}
	for _, v := range verdicts {
		if seen[v] < 50 {
			t.Errorf("only %d frames with verdict %v (shed %v): generator too narrow", seen[v], v, tb.shed)
		}
	}
	if !tb.shed && seen[verdictShed] > 0 {
		t.Errorf("%d frames shed while the queue does not shed", seen[verdictShed])
	}
}

var fuzzSteering struct {
	once sync.Once
	s    *Steering
}

func init() {
	fuzzSteeringProgram = func(t *testing.T, b []byte, want steerVerdict) {
		fuzzSteering.once.Do(func() {
			s, err := LoadSteering(SteeringOptions{Queues: 4})
			if err != nil {
				t.Fatal(err)
			}
			configureSteering(t, s)
			fuzzSteering.s = s
		})
		if len(b) < ethLen || len(b) > 4000 {
			return
		}
		if got := runSteering(t, fuzzSteering.s, b); got != want {
			t.Fatalf("frame %x: program %v, model %v", b, got, want)
		}
	}
}

func TestSteeringMapFull(t *testing.T) {
	requireRoot(t)
	s, err := LoadSteering(SteeringOptions{Queues: 1, MaxAddrs: 2, MaxPorts: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := byte(1); i <= 2; i++ {
		if err := s.AddAddr(netip.AddrFrom4([4]byte{10, 0, 0, i})); err != nil {
			t.Fatal(err)
		}
		if err := s.AddPort(netip.Addr{}, uint16(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Updating an existing entry still works when the map is full.
	if err := s.AddAddr(netip.AddrFrom4([4]byte{10, 0, 0, 1})); err != nil {
		t.Fatalf("re-adding an address to a full map: %v", err)
	}
	if err := s.AddAddr(netip.AddrFrom4([4]byte{10, 0, 0, 3})); err == nil || !strings.Contains(err.Error(), "MaxAddrs") {
		t.Fatalf("third address: %v, want a hint about MaxAddrs", err)
	}
	if err := s.AddPort(netip.Addr{}, 3); err == nil || !strings.Contains(err.Error(), "MaxPorts") {
		t.Fatalf("third port: %v, want a hint about MaxPorts", err)
	}
}
