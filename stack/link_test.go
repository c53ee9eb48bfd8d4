package stack

import (
	"bytes"
	"testing"

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
