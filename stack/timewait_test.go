package stack

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func twFlow(port uint16) flowKey {
	var f flowKey
	put4(&f.localAddr, []byte{198, 18, 0, 1})
	put4(&f.remoteAddr, []byte{198, 18, 0, 2})
	f.localPort, f.remotePort = 80, port
	return f
}

// TestTimeWaitTableEntries: entries last the period from their last put,
// a renewed entry is not dropped by its first period's end, a full table
// refuses new connections (counted) but renews those it has, and
// holdsPort finds a connection by its local port and address.
func TestTimeWaitTableEntries(t *testing.T) {
	var tw timeWaitTable
	tw.init(5*time.Second, 2)
	s := int64(time.Second)
	a, b, c := twFlow(40000), twFlow(40001), twFlow(40002)
	if !tw.put(a, twEntry{rcvNxt: 1}, 0) || !tw.put(b, twEntry{rcvNxt: 2}, 1*s) {
		t.Fatal("put refused with room")
	}
	if tw.put(c, twEntry{}, 1*s) || tw.overflow.Load() != 1 {
		t.Errorf("a full table took a third connection (overflow %d)", tw.overflow.Load())
	}
	if !tw.put(a, twEntry{rcvNxt: 3}, 2*s) {
		t.Error("a full table refused to renew an entry it has")
	}
	tw.expire(5 * s) // a's first period is over, but it was renewed at 2 s
	if e, ok := tw.lookup(a); !ok || e.rcvNxt != 3 {
		t.Errorf("renewed entry after its first period: %+v, %v", e, ok)
	}
	tw.expire(6 * s)
	if _, ok := tw.lookup(b); ok {
		t.Error("b outlived its period")
	}
	if !tw.holdsPort(netip.MustParseAddrPort("198.18.0.1:80")) || !tw.holdsPort(netip.MustParseAddrPort("0.0.0.0:80")) {
		t.Error("holdsPort misses port 80")
	}
	if tw.holdsPort(netip.MustParseAddrPort("198.18.0.1:81")) || tw.holdsPort(netip.MustParseAddrPort("[::]:80")) {
		t.Error("holdsPort finds a port or family it has no connection on")
	}
	tw.expire(7 * s)
	if tw.size.Load() != 0 || len(tw.m) != 0 {
		t.Errorf("%d entries after every period ended", len(tw.m))
	}
	var off timeWaitTable
	off.init(0, 2)
	if off.holdsPort(netip.MustParseAddrPort("0.0.0.0:80")) {
		t.Error("an empty table holds a port")
	}
}

// finFrame builds the peer's FIN-ACK as the shard receives it: Ethernet,
// IPv4 or IPv6, TCP with a timestamp option.
func finFrame(v6 bool, seq, ack, tsVal, tsEcr uint32) []byte {
	tcpLen := 32
	ipLen := 20
	et := uint16(ethTypeIPv4)
	if v6 {
		ipLen, et = 40, ethTypeIPv6
	}
	f := make([]byte, ethHeaderLen+ipLen+tcpLen)
	copy(f[0:6], []byte{2, 0, 0, 0, 0, 1}) // to us
	copy(f[6:12], []byte{2, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(f[12:14], et)
	ip := f[ethHeaderLen:]
	var src, dst tcpip.Address
	if v6 {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:6], uint16(tcpLen))
		ip[6], ip[7] = protoTCP, 64
		s, d := netip.MustParseAddr("fd00:f5::2").As16(), netip.MustParseAddr("fd00:f5::1").As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
		src, dst = tcpip.AddrFrom16(s), tcpip.AddrFrom16(d)
	} else {
		header.IPv4(ip).Encode(&header.IPv4Fields{TotalLength: uint16(ipLen + tcpLen), TTL: 64, Protocol: protoTCP,
			SrcAddr: tcpip.AddrFrom4([4]byte{198, 18, 0, 2}), DstAddr: tcpip.AddrFrom4([4]byte{198, 18, 0, 1})})
		header.IPv4(ip).SetChecksum(^header.IPv4(ip).CalculateChecksum())
		src, dst = header.IPv4(ip).SourceAddress(), header.IPv4(ip).DestinationAddress()
	}
	th := header.TCP(ip[ipLen:])
	th.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: seq, AckNum: ack, DataOffset: uint8(tcpLen),
		Flags: header.TCPFlagFin | header.TCPFlagAck, WindowSize: 512})
	o := th[20:]
	o[0], o[1], o[2], o[3] = 1, 1, 8, 10
	binary.BigEndian.PutUint32(o[4:8], tsVal)
	binary.BigEndian.PutUint32(o[8:12], tsEcr)
	th.SetChecksum(^checksum.Checksum(th, header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen))))
	return f
}

// TestTimeWaitAck: the table's ACK for a retransmitted FIN goes back to
// its sender (MACs, addresses and ports swapped), acknowledges the FIN,
// carries our next sequence number and timestamps that pass the peer's
// PAWS check (ours at least what it echoed, moving in milliseconds; its
// own echoed), with valid checksums, for IPv4 and IPv6.
func TestTimeWaitAck(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		tx := newFakeTx(4)
		e := newLinkEndpoint(1500, "\x02\x00\x00\x00\x00\x01", false, tx, nil, &shardCounters{})
		in := finFrame(v6, 5000, 9000, 777, 123456)
		info, ok := parseSegment(in)
		if !ok {
			t.Fatalf("v6=%v: the FIN frame does not parse", v6)
		}
		if got := info.payloadLen(); got != 0 {
			t.Fatalf("v6=%v: FIN payload %d", v6, got)
		}
		at := int64(1e12)
		ent := twEntry{sndNxt: 9000, rcvNxt: 5001, ts: true, tsOurs: 123456, at: at}
		if !e.sendTimeWaitAck(in, &info, ent, at+int64(2500*time.Millisecond)) {
			t.Fatalf("v6=%v: no ACK sent", v6)
		}
		if len(tx.sent) != 1 {
			t.Fatalf("v6=%v: %d frames sent", v6, len(tx.sent))
		}
		out := tx.sent[0]
		if string(out[0:6]) != string(in[6:12]) || string(out[6:12]) != string(in[0:6]) {
			t.Errorf("v6=%v: MACs %x -> %x", v6, out[6:12], out[0:6])
		}
		back, ok := parseSegment(out)
		if !ok {
			t.Fatalf("v6=%v: the ACK does not parse", v6)
		}
		if back.flow.localAddr != info.flow.remoteAddr || back.flow.remoteAddr != info.flow.localAddr ||
			back.flow.localPort != 40000 || back.flow.remotePort != 80 {
			t.Errorf("v6=%v: ACK flow %+v; want the FIN's reversed", v6, back.flow)
		}
		if back.flags != tcpFlagAck || back.seq != 9000 || back.ack != 5001 {
			t.Errorf("v6=%v: flags %#x seq %d ack %d; want ACK, 9000, 5001", v6, back.flags, back.seq, back.ack)
		}
		opts, _ := segmentOptions(&back, out)
		if !opts.TS || opts.TSVal != 123456+2500 || opts.TSEcr != 777 {
			t.Errorf("v6=%v: timestamps %+v; want val 125956, echo 777", v6, opts)
		}
		ip := out[back.ipStart : back.ipStart+back.ipLength]
		var src, dst tcpip.Address
		var tcpBytes []byte
		if v6 {
			h := header.IPv6(ip)
			src, dst, tcpBytes = h.SourceAddress(), h.DestinationAddress(), ip[40:]
		} else {
			h := header.IPv4(ip)
			if !h.IsChecksumValid() {
				t.Errorf("IPv4 header checksum invalid")
			}
			src, dst, tcpBytes = h.SourceAddress(), h.DestinationAddress(), ip[20:]
		}
		th := header.TCP(tcpBytes)
		if !th.IsChecksumValid(src, dst, checksum.Checksum(th.Payload(), 0), uint16(len(th.Payload()))) {
			t.Errorf("v6=%v: TCP checksum invalid", v6)
		}
		if th.WindowSize() == 0 {
			t.Errorf("v6=%v: zero window", v6)
		}
	}
}
