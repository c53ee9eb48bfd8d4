package capture

import (
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// MaxSnapLen is the snap length written in pcap headers when frames are
// kept whole: larger than any frame a shard handles (an AF_XDP frame is at
// most a few KiB).
const MaxSnapLen = 65535

// PcapWriter writes frames as a pcap file (link type Ethernet,
// microsecond timestamps) that tcpdump, tshark and Wireshark read. It is
// not safe for concurrent use.
type PcapWriter struct {
	w *pcapgo.Writer
}

// NewPcapWriter writes the pcap file header to w. snapLen is the longest
// frame kept (0: MaxSnapLen).
func NewPcapWriter(w io.Writer, snapLen int) (*PcapWriter, error) {
	if snapLen <= 0 || snapLen > MaxSnapLen {
		snapLen = MaxSnapLen
	}
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(uint32(snapLen), layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return &PcapWriter{w: pw}, nil
}

// WriteFrame appends one frame; origLen is its length on the wire
// (len(data) unless it was cut).
func (p *PcapWriter) WriteFrame(t time.Time, data []byte, origLen int) error {
	if origLen < len(data) {
		origLen = len(data)
	}
	ci := gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(data), Length: origLen}
	if err := p.w.WritePacket(ci, data); err != nil {
		return fmt.Errorf("write pcap record: %w", err)
	}
	return nil
}

// Summary returns one tcpdump-like line for a frame:
//
//	15:04:05.000000 shard 1 in  198.18.0.2.40000 > 198.18.0.1.80: Flags [S], seq 1, win 64240, length 0
//
// dir is "in" or "out". A frame that is not IPv4 or IPv6 TCP is summarised by
// what gopacket makes of it.
func Summary(t time.Time, shard int, dir string, data []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s shard %d %-3s ", t.Format("15:04:05.000000"), shard, dir)
	pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	var src, dst net.IP
	if ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		src, dst = ip.SrcIP, ip.DstIP
	} else if ip, ok := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		src, dst = ip.SrcIP, ip.DstIP
	}
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if src == nil || tcp == nil {
		if el := pkt.ErrorLayer(); el != nil {
			fmt.Fprintf(&b, "undecodable frame of %d bytes: %v", len(data), el.Error())
		} else {
			fmt.Fprintf(&b, "%d bytes: %s", len(data), layerNames(pkt))
		}
		return b.String()
	}
	fmt.Fprintf(&b, "%s.%d > %s.%d: Flags [%s], seq %d", src, tcp.SrcPort, dst, tcp.DstPort, tcpFlags(tcp), tcp.Seq)
	if n := len(tcp.Payload); n > 0 {
		fmt.Fprintf(&b, ":%d", tcp.Seq+uint32(n))
	}
	if tcp.ACK {
		fmt.Fprintf(&b, ", ack %d", tcp.Ack)
	}
	fmt.Fprintf(&b, ", win %d, length %d", tcp.Window, len(tcp.Payload))
	return b.String()
}

// tcpFlags writes flags as tcpdump does: S F R P U E W, and "." for ACK.
func tcpFlags(t *layers.TCP) string {
	var f []byte
	for _, x := range []struct {
		on bool
		c  byte
	}{{t.SYN, 'S'}, {t.FIN, 'F'}, {t.RST, 'R'}, {t.PSH, 'P'}, {t.URG, 'U'}, {t.ECE, 'E'}, {t.CWR, 'W'}, {t.ACK, '.'}} {
		if x.on {
			f = append(f, x.c)
		}
	}
	if len(f) == 0 {
		return "none"
	}
	return string(f)
}

func layerNames(p gopacket.Packet) string {
	var names []string
	for _, l := range p.Layers() {
		names = append(names, l.LayerType().String())
	}
	if len(names) == 0 {
		return "nothing decodable"
	}
	return strings.Join(names, "/")
}
