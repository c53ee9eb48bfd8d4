//go:build linux

package afxdp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// TestTxChecksum: a frame sent with SetTxChecksum, carrying only the
// pseudo-header sum, arrives with the complete TCP checksum (the lab's
// veth has no checksum offload, so the kernel completes it in software
// on the way out), and a frame sent without it on the same socket
// arrives as written.
func TestTxChecksum(t *testing.T) {
	x := newXDPLab(t)
	const q = 1
	var cli *Socket
	if err := netlab.Do(x.ClientNS, func() error {
		ifc, err := net.InterfaceByName(x.ClientIf)
		if err != nil {
			return err
		}
		cli, err = Open(ifc.Index, q, SocketConfig{NumFrames: 64, RingSize: 32, TxChecksum: true})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if !cli.TxChecksumOn() {
		t.Skip("this kernel has no AF_XDP tx metadata (Linux 6.11+); fsstack sums in software there")
	}

	send := func(port uint16, offload bool) []byte {
		t.Helper()
		f := frameSpec{srcMAC: x.ClientMAC, dstMAC: x.ServerMAC, flags: TCPFlagACK | TCPFlagPSH,
			src: netip.AddrPortFrom(x.ClientAddr, port), dst: netip.AddrPortFrom(x.ServerAddr, 9999),
			payload: bytes.Repeat([]byte("checksum "), 100)}.build()
		want := bytes.Clone(f)
		if offload {
			// Leave only the pseudo-header sum, as a stack does for a
			// NIC that checksums.
			tcp := f[14+20:]
			var p [12]byte
			copy(p[0:4], f[14+12:14+16])
			copy(p[4:8], f[14+16:14+20])
			p[9] = protoTCP
			binary.BigEndian.PutUint16(p[10:], uint16(len(tcp)))
			binary.BigEndian.PutUint16(tcp[16:], ^fold(checksum(0, p[:])))
		}
		d, buf, ok := cli.TxFrame()
		if !ok {
			t.Fatal("no tx frame")
		}
		d.Len = uint32(copy(buf, f))
		if got := cli.SetTxChecksum(d, 14+20, 16); got != true {
			t.Fatal("SetTxChecksum refused on a socket with tx checksum")
		}
		if !offload {
			// Ask nothing: clear the flags SetTxChecksum set, as
			// TxFrame leaves them.
			clear(cli.umem[d.Addr-cli.txMeta : d.Addr-cli.txMeta+8])
		}
		if n := cli.Submit([]Desc{d}); n != 1 {
			t.Fatalf("submitted %d", n)
		}
		return want
	}
	for _, c := range []struct {
		port    uint16
		offload bool
	}{{41001, true}, {41002, false}, {41003, true}} {
		want := send(c.port, c.offload)
		got, _, _, err := x.receiveTCP(t, 5*time.Second, func(in TCPInfo) bool { return in.Src.Port() == c.port })
		if err != nil {
			t.Fatalf("port %d (offload %v): %v", c.port, c.offload, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("port %d (offload %v): frame arrived as\n%x\nwant\n%x", c.port, c.offload, got, want)
		}
	}
}
