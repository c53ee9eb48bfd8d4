package capture

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

func TestPcapRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewPcapWriter(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC)
	if err := w.WriteFrame(when, toServer, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame(when.Add(time.Millisecond), fromServer[:20], len(fromServer)); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet || r.Snaplen() != MaxSnapLen {
		t.Errorf("link type %v, snaplen %d", r.LinkType(), r.Snaplen())
	}
	data, ci, err := r.ReadPacketData()
	if err != nil || !bytes.Equal(data, toServer) || !ci.Timestamp.Equal(when) || ci.Length != len(toServer) {
		t.Fatalf("first record: %v %+v %x", err, ci, data)
	}
	data, ci, err = r.ReadPacketData()
	if err != nil || len(data) != 20 || ci.Length != len(fromServer) {
		t.Fatalf("second record: %v %+v", err, ci)
	}
}

func TestSummary(t *testing.T) {
	f := append(frame(client, server, 40000, 80), "GET /"...)
	ip := f[14:]
	binary.BigEndian.PutUint16(ip[2:4], uint16(len(ip)))
	tcp := ip[20:]
	binary.BigEndian.PutUint32(tcp[4:8], 1000)
	binary.BigEndian.PutUint32(tcp[8:12], 77)
	tcp[13] = 0x18 // PSH ACK
	binary.BigEndian.PutUint16(tcp[14:16], 502)
	when := time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.Local)
	got := Summary(when, 2, "in", f)
	want := "10:00:00.123456 shard 2 in  198.18.0.2.40000 > 198.18.0.1.80: Flags [P.], seq 1000:1005, ack 77, win 502, length 5"
	if got != want {
		t.Errorf("Summary:\n got %q\nwant %q", got, want)
	}
	tcp[13] = 0x02 // SYN
	if got := Summary(when, 0, "out", f); !strings.Contains(got, "shard 0 out 198.18.0.2.40000 > 198.18.0.1.80: Flags [S], seq 1000:1005, win 502") {
		t.Errorf("SYN: %q", got)
	}
	if got := Summary(when, 1, "in", frame6("fd00:f5::2", "fd00:f5::1", 40000, 80)); !strings.Contains(got, "fd00:f5::2.40000 > fd00:f5::1.80: Flags [none]") {
		t.Errorf("IPv6: %q", got)
	}
	if got := Summary(when, 0, "in", []byte{1, 2, 3}); !strings.Contains(got, "3 bytes") {
		t.Errorf("short frame: %q", got)
	}
}
