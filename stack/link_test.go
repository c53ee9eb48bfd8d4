package stack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// fakeTx is a txRing over plain memory: frames are 2048-byte slices, post
// records what was sent, kicks are counted.
type fakeTx struct {
	frames [][]byte
	free   []uint64
	sent   [][]byte
	kicks  int
	queued int
}

func newFakeTx(n int) *fakeTx {
	t := &fakeTx{}
	for i := 0; i < n; i++ {
		t.frames = append(t.frames, make([]byte, 2048))
		t.free = append(t.free, uint64(i))
	}
	return t
}

func (t *fakeTx) reserve() ([]byte, uint64, bool) {
	if len(t.free) == 0 {
		return nil, 0, false
	}
	tok := t.free[len(t.free)-1]
	t.free = t.free[:len(t.free)-1]
	return t.frames[tok], tok, true
}

func (t *fakeTx) checksum(uint64, uint16, uint16) bool { return false }

func (t *fakeTx) post(tokens []uint64, lens []uint32) int {
	for i, tok := range tokens {
		t.sent = append(t.sent, append([]byte(nil), t.frames[tok][:lens[i]]...))
		t.free = append(t.free, tok)
	}
	t.queued += len(tokens)
	return len(tokens)
}

func (t *fakeTx) cancel(tokens []uint64) { t.free = append(t.free, tokens...) }
func (t *fakeTx) kick() bool             { t.kicks++; t.queued = 0; return true }
func (t *fakeTx) pending() int           { return t.queued }
func (t *fakeTx) frame(tok uint64, n uint32) []byte {
	return t.frames[tok][:n]
}

var (
	segSrc = tcpip.AddrFrom4([4]byte{198, 18, 0, 1})
	segDst = tcpip.AddrFrom4([4]byte{198, 18, 0, 2})
)

// gsoPacket builds what netstack hands a GSO link endpoint: IPv4 + TCP
// (with a timestamp option) over payload, the TCP checksum left partial.
func gsoPacket(payload []byte, mss uint16, flags header.TCPFlags) *stack.PacketBuffer {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
		ReserveHeaderBytes: 80,
		Payload:            buffer.MakeWithData(payload),
	})
	opts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP TS
	tcp := header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize + len(opts)))
	tcp.Encode(&header.TCPFields{SrcPort: 80, DstPort: 40000, SeqNum: 1000, AckNum: 7, DataOffset: uint8(header.TCPMinimumSize + len(opts)), Flags: flags, WindowSize: 512})
	copy(tcp[header.TCPMinimumSize:], opts)
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, segSrc, segDst, uint16(pkt.Size())))
	ip := header.IPv4(pkt.NetworkHeader().Push(header.IPv4MinimumSize))
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(pkt.Size()), ID: 100, Flags: header.IPv4FlagDontFragment, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: segSrc, DstAddr: segDst})
	ip.SetChecksum(^ip.CalculateChecksum())
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: mss, L3HdrLen: header.IPv4MinimumSize, MaxSize: gsoMaxSize}
	return pkt
}

// TestCutGSOSegment checks every frame cut from a 64 KiB segment as a
// receiver would: valid IP and TCP checksums, contiguous sequence numbers,
// FIN and PSH on the last frame only, the payload reassembled exactly.
func TestCutGSOSegment(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		mss    uint16
		flags  header.TCPFlags
		frames int // frames expected
	}{
		{"64KiB with FIN", 65000, 1448, header.TCPFlagAck | header.TCPFlagPsh | header.TCPFlagFin, 45},
		{"exactly one MSS", 1448, 1448, header.TCPFlagAck | header.TCPFlagPsh, 1},
		{"pure ACK", 0, 1448, header.TCPFlagAck, 1},
		{"odd tail", 3*1448 + 1, 1448, header.TCPFlagAck, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := pattern(tc.size, int64(tc.size))
			tx := newFakeTx(64)
			e := newLinkEndpoint(1500, "\x02\x00\x00\x00\x00\x01", false, tx, nil, &shardCounters{})
			e.gso = true
			pkt := gsoPacket(payload, tc.mss, tc.flags)
			defer pkt.DecRef()
			e.txMu.Lock()
			ok, full := e.writeSegmentsLocked(pkt, [6]byte{2, 0, 0, 0, 0, 2})
			tx.post(e.tokens, e.lens)
			e.txMu.Unlock()
			if !ok || full {
				t.Fatalf("writeSegmentsLocked: ok %v full %v", ok, full)
			}
			if len(tx.sent) != tc.frames {
				t.Fatalf("%d frames, want %d", len(tx.sent), tc.frames)
			}
			var got []byte
			seq := uint32(1000)
			for i, f := range tx.sent {
				ip := header.IPv4(f[ethHeaderLen:])
				if !ip.IsValid(len(ip)) || !ip.IsChecksumValid() || int(ip.TotalLength()) != len(ip) {
					t.Fatalf("frame %d: bad IPv4 header %x", i, []byte(ip[:20]))
				}
				if ip.ID() != uint16(100+i) {
					t.Errorf("frame %d: IP id %d, want %d", i, ip.ID(), 100+i)
				}
				tcp := header.TCP(ip.Payload())
				data := tcp[tcp.DataOffset():]
				xsum := checksum.Checksum(data, 0)
				if !tcp.IsChecksumValid(segSrc, segDst, xsum, uint16(len(data))) {
					t.Fatalf("frame %d: bad TCP checksum", i)
				}
				if tcp.SequenceNumber() != seq {
					t.Fatalf("frame %d: seq %d, want %d", i, tcp.SequenceNumber(), seq)
				}
				last := i == len(tx.sent)-1
				want := tc.flags
				if !last {
					want &^= header.TCPFlagFin | header.TCPFlagPsh
				}
				if tcp.Flags() != want {
					t.Errorf("frame %d: flags %v, want %v", i, tcp.Flags(), want)
				}
				if len(data) > int(tc.mss) || len(f) > 1514 {
					t.Errorf("frame %d: %d payload bytes, frame %d bytes", i, len(data), len(f))
				}
				seq += uint32(len(data))
				got = append(got, data...)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("reassembled payload differs (%d bytes, want %d)", len(got), len(payload))
			}
		})
	}
}

// TestCutGSOSegment6 cuts an IPv6 segment: each frame's EtherType, payload
// length and TCP checksum (over the IPv6 pseudo-header) are right, the
// sequence numbers contiguous and the payload exact.
func TestCutGSOSegment6(t *testing.T) {
	src6 := tcpip.AddrFrom16([16]byte{0xfd, 0, 0xf5, 15: 1})
	dst6 := tcpip.AddrFrom16([16]byte{0xfd, 0, 0xf5, 15: 2})
	payload := pattern(10*1428+7, 6)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 80, Payload: buffer.MakeWithData(payload)})
	defer pkt.DecRef()
	tcp := header.TCP(pkt.TransportHeader().Push(header.TCPMinimumSize))
	tcp.Encode(&header.TCPFields{SrcPort: 80, DstPort: 40000, SeqNum: 1000, AckNum: 7, DataOffset: header.TCPMinimumSize,
		Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 512})
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src6, dst6, uint16(pkt.Size())))
	ip := header.IPv6(pkt.NetworkHeader().Push(header.IPv6MinimumSize))
	ip.Encode(&header.IPv6Fields{PayloadLength: uint16(pkt.Size() - header.IPv6MinimumSize), TransportProtocol: header.TCPProtocolNumber,
		HopLimit: 64, SrcAddr: src6, DstAddr: dst6})
	pkt.NetworkProtocolNumber = header.IPv6ProtocolNumber
	pkt.GSOOptions = stack.GSO{Type: stack.GSOTCPv6, NeedsCsum: true, CsumOffset: header.TCPChecksumOffset, MSS: 1428,
		L3HdrLen: header.IPv6MinimumSize, MaxSize: gsoMaxSize}

	tx := newFakeTx(64)
	e := newLinkEndpoint(1500, "\x02\x00\x00\x00\x00\x01", false, tx, nil, &shardCounters{})
	e.gso = true
	e.txMu.Lock()
	ok, full := e.writeSegmentsLocked(pkt, [6]byte{2, 0, 0, 0, 0, 2})
	tx.post(e.tokens, e.lens)
	e.txMu.Unlock()
	if !ok || full || len(tx.sent) != 11 {
		t.Fatalf("writeSegmentsLocked: ok %v full %v, %d frames, want 11", ok, full, len(tx.sent))
	}
	var got []byte
	seq := uint32(1000)
	for i, f := range tx.sent {
		if f[12] != 0x86 || f[13] != 0xdd {
			t.Fatalf("frame %d: EtherType %x", i, f[12:14])
		}
		ip := header.IPv6(f[ethHeaderLen:])
		if !ip.IsValid(len(ip)) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(ip) {
			t.Fatalf("frame %d: bad IPv6 header %x", i, []byte(ip[:40]))
		}
		tcp := header.TCP(ip.Payload())
		data := tcp[tcp.DataOffset():]
		if !tcp.IsChecksumValid(src6, dst6, checksum.Checksum(data, 0), uint16(len(data))) {
			t.Fatalf("frame %d: bad TCP checksum", i)
		}
		if tcp.SequenceNumber() != seq || len(data) > 1428 {
			t.Fatalf("frame %d: seq %d (want %d), %d bytes", i, tcp.SequenceNumber(), seq, len(data))
		}
		if psh := tcp.Flags()&header.TCPFlagPsh != 0; psh != (i == len(tx.sent)-1) {
			t.Errorf("frame %d: PSH %v", i, psh)
		}
		// The receive path parses what the link endpoint writes.
		if info, ok := parseSegment(f); !ok || !info.v6 || info.flow.localPort != 40000 {
			t.Fatalf("frame %d: parseSegment %v %+v", i, ok, info)
		}
		seq += uint32(len(data))
		got = append(got, data...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("reassembled payload differs (%d bytes, want %d)", len(got), len(payload))
	}
}

// TestCutGSOSegmentNoFrames: a segment that does not fit the free frames
// is dropped whole and gives every frame back.
func TestCutGSOSegmentNoFrames(t *testing.T) {
	tx := newFakeTx(10)
	e := newLinkEndpoint(1500, "\x02\x00\x00\x00\x00\x01", false, tx, nil, &shardCounters{})
	pkt := gsoPacket(pattern(30000, 3), 1448, header.TCPFlagAck)
	defer pkt.DecRef()
	e.txMu.Lock()
	ok, full := e.writeSegmentsLocked(pkt, [6]byte{})
	e.txMu.Unlock()
	if ok || !full || len(e.tokens) != 0 || len(tx.free) != 10 {
		t.Fatalf("ok %v full %v, %d tokens kept, %d of 10 frames free", ok, full, len(e.tokens), len(tx.free))
	}
}

// TestFlushTxCombines: frames posted while another goroutine kicks leave
// with that goroutine's next kick; nothing stays pending.
func TestFlushTxCombines(t *testing.T) {
	tx := newFakeTx(4)
	e := newLinkEndpoint(1500, "", false, tx, nil, &shardCounters{})
	e.kicking.Store(true) // someone else is in sendto
	e.txPending.Store(true)
	if !e.flushTx() || tx.kicks != 0 {
		t.Fatalf("flushTx kicked beside another kicker (%d kicks)", tx.kicks)
	}
	e.kicking.Store(false)
	e.flushTx() // what the kicker does when its sendto returns
	if tx.kicks != 1 || e.txPending.Load() {
		t.Fatalf("%d kicks, pending %v; want 1 kick, nothing pending", tx.kicks, e.txPending.Load())
	}
}

// ackFrame builds a frame of flow 198.18.0.1:80 -> 198.18.0.2:40000 with
// the given flags, ack number and payload length.
func ackFrame(flags uint8, ack uint32, payload int) []byte {
	f := buildFrame([4]byte{198, 18, 0, 1}, [4]byte{198, 18, 0, 2}, 80, 40000, flags, payload)
	binary.BigEndian.PutUint32(f[ethHeaderLen+20+8:], ack)
	return f
}

// queue runs frames through queueFrameLocked as WritePackets would and
// returns the indices (into frames) of those posted, in order.
func queueFrames(e *linkEndpoint, tx *fakeTx, frames ...[]byte) []int {
	e.txMu.Lock()
	defer e.txMu.Unlock()
	e.tokens, e.lens = e.tokens[:0], e.lens[:0]
	for i := range frames {
		_, tok, _ := tx.reserve()
		tok = uint64(i) // tokens name the frame's index in this test
		e.queueFrameLocked(frames[i], tok)
	}
	var out []int
	for _, tok := range e.tokens {
		out = append(out, int(tok))
	}
	return out
}

func TestDelayedACK(t *testing.T) {
	const ack = tcpFlagAck
	for _, tc := range []struct {
		name   string
		frames [][]byte
		posted []int // indices posted at once
		held   int   // ACKs left held
	}{
		{"pure ACK is held", [][]byte{ackFrame(ack, 100, 0)}, nil, 1},
		{"answer carries the ACK", [][]byte{ackFrame(ack, 100, 0), ackFrame(ack|0x08, 100, 64)}, []int{1}, 0},
		{"FIN carries the ACK", [][]byte{ackFrame(ack, 100, 0), ackFrame(ack|tcpFlagFin, 101, 0)}, []int{1}, 0},
		{"duplicate ACKs both leave", [][]byte{ackFrame(ack, 100, 0), ackFrame(ack, 100, 0)}, []int{0, 1}, 0},
		{"newer ACK replaces, leaves at once", [][]byte{ackFrame(ack, 100, 0), ackFrame(ack, 200, 0)}, []int{1}, 0},
		{"older ack in a segment: held one first", [][]byte{ackFrame(ack, 200, 0), ackFrame(ack|0x08, 100, 10)}, []int{0, 1}, 0},
		{"data alone is not held", [][]byte{ackFrame(ack|0x08, 100, 10)}, []int{0}, 0},
		{"SYN-ACK is not held", [][]byte{ackFrame(ack|tcpFlagSyn, 1, 0)}, []int{0}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx := newFakeTx(8)
			e := newLinkEndpoint(1500, "", false, tx, nil, &shardCounters{})
			e.acks.delay = time.Millisecond
			got := queueFrames(e, tx, tc.frames...)
			if fmt.Sprint(got) != fmt.Sprint(tc.posted) {
				t.Errorf("posted %v, want %v", got, tc.posted)
			}
			if n := int(e.heldAcks.Load()); n != tc.held {
				t.Errorf("%d ACKs held, want %d", n, tc.held)
			}
		})
	}
}

func TestDelayedACKDeadline(t *testing.T) {
	tx := newFakeTx(8)
	e := newLinkEndpoint(1500, "", false, tx, nil, &shardCounters{})
	e.acks.delay = time.Millisecond
	// now is read before the ACK is held, so its deadline lies at least
	// the delay after now however slowly this test runs.
	now := time.Now().UnixNano()
	queueFrames(e, tx, ackFrame(tcpFlagAck, 100, 0))
	if next := e.releaseAcks(now, false); next == 0 || len(tx.sent) != 0 {
		t.Fatalf("before its deadline: next %d, %d sent", next, len(tx.sent))
	}
	if next := e.releaseAcks(now+int64(2*time.Millisecond), false); next != 0 || len(tx.sent) != 1 || e.heldAcks.Load() != 0 {
		t.Fatalf("after its deadline: next %d, %d sent, %d held", next, len(tx.sent), e.heldAcks.Load())
	}
	if tx.kicks != 1 {
		t.Errorf("%d kicks, want 1", tx.kicks)
	}
}

// TestDelayedACKSACK: an ACK carrying a SACK block tells the peer of a
// loss and is never held.
func TestDelayedACKSACK(t *testing.T) {
	f := ackFrame(tcpFlagAck, 100, 0)
	// Grow the TCP header by 12 bytes: NOP NOP SACK(10) with one block.
	opts := []byte{1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	f = append(f, opts...)
	ip := f[ethHeaderLen:]
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[20+12] = (20 + 12) / 4 << 4
	tx := newFakeTx(8)
	e := newLinkEndpoint(1500, "", false, tx, nil, &shardCounters{})
	e.acks.delay = time.Millisecond
	if got := queueFrames(e, tx, f); len(got) != 1 || e.heldAcks.Load() != 0 {
		t.Fatalf("SACK-carrying ACK: posted %v, %d held", got, e.heldAcks.Load())
	}
}

// flowAck is ackFrame for the flow from port 80 to dport.
func flowAck(dport uint16, flags uint8, ack uint32, payload int) []byte {
	f := buildFrame([4]byte{198, 18, 0, 1}, [4]byte{198, 18, 0, 2}, 80, dport, flags, payload)
	binary.BigEndian.PutUint32(f[ethHeaderLen+20+8:], ack)
	return f
}

// TestDelayedACKQueue: holds leave in order when due, skipping those a
// segment carried, and a flow held again after its hold went leaves once.
func TestDelayedACKQueue(t *testing.T) {
	tx := newFakeTx(16)
	e := newLinkEndpoint(1500, "", false, tx, nil, &shardCounters{})
	e.acks.delay = time.Millisecond
	const ack = tcpFlagAck
	posted := queueFrames(e, tx,
		flowAck(1, ack, 10, 0),      // 0: held
		flowAck(2, ack, 10, 0),      // 1: held
		flowAck(3, ack, 10, 0),      // 2: held
		flowAck(2, ack|0x08, 10, 5), // 3: carries 1's ACK
		flowAck(1, ack, 20, 0),      // 4: newer than 0: 0 dropped, 4 leaves
		flowAck(1, ack, 30, 0),      // 5: held again
	)
	if fmt.Sprint(posted) != "[3 4]" {
		t.Fatalf("posted at once %v, want [3 4]", posted)
	}
	if n := e.heldAcks.Load(); n != 2 {
		t.Fatalf("%d held, want 2 (frames 2 and 5)", n)
	}
	before := len(tx.sent)
	if next := e.releaseAcks(time.Now().Add(time.Hour).UnixNano(), false); next != 0 {
		t.Errorf("next deadline %d after releasing everything", next)
	}
	if got := len(tx.sent) - before; got != 2 || e.heldAcks.Load() != 0 || len(e.acks.queue) != 0 {
		t.Fatalf("released %d frames, %d still held, queue %d; want 2, 0, 0", got, e.heldAcks.Load(), len(e.acks.queue))
	}
}

// TestIPv4HeaderChecksum: the link endpoint's header checksum agrees with
// netstack's on headers with and without options.
func TestIPv4HeaderChecksum(t *testing.T) {
	for _, optWords := range []int{0, 1, 10} {
		n := header.IPv4MinimumSize + 4*optWords
		for seed := int64(0); seed < 200; seed++ {
			b := make([]byte, n)
			rand.New(rand.NewSource(seed)).Read(b)
			b[0] = 0x40 | byte(n/4)
			ip := header.IPv4(b)
			ip.SetChecksum(0)
			want := ^ip.CalculateChecksum()
			if got := ipv4HeaderChecksum(b); got != want {
				t.Fatalf("%d-byte header %x: checksum %#04x, want %#04x", n, b, got, want)
			}
			ip.SetChecksum(want)
			if !ip.IsChecksumValid() {
				t.Fatalf("%d-byte header %x: netstack rejects checksum %#04x", n, b, want)
			}
		}
	}
}
