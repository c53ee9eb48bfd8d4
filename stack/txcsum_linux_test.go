//go:build linux

package stack

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

// TestTxChecksumOffload: with the transmit checksum left to the kernel
// (the default) and without it (NoTxChecksum), over a veth with checksum
// offload off (the kernel completes the sum in software; the peer checks
// it) and on (the peer takes the partial sum as its own sockets' traffic),
// a kernel client receives every byte, checked by digest.
func TestTxChecksumOffload(t *testing.T) {
	requireRoot(t)
	const size = 8 << 20
	down := pattern(size, 3)
	want := sha256.Sum256(down)
	for _, c := range []struct {
		vethOffload, noTxChecksum bool
	}{{false, false}, {false, true}, {true, false}} {
		t.Run(fmt.Sprintf("veth offload %v, NoTxChecksum %v", c.vethOffload, c.noTxChecksum), func(t *testing.T) {
			lab, err := netlab.New(netlab.Options{Queues: labQueues, Name: "stc", ChecksumOffload: c.vethOffload})
			if err != nil {
				t.Fatal(err)
			}
			defer lab.Close()
			s, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS, NoTxChecksum: c.noTxChecksum})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			on := 0
			for _, sh := range s.shards {
				if sh.sock.TxChecksumOn() {
					on++
				}
			}
			switch {
			case c.noTxChecksum && on > 0:
				t.Fatalf("NoTxChecksum: %d shards still leave checksums to the kernel", on)
			case !c.noTxChecksum && on == 0:
				t.Skip("this kernel has no AF_XDP tx metadata (Linux 6.11+): the shards sum in software")
			case !c.noTxChecksum && on != len(s.shards):
				t.Fatalf("%d of %d shards leave checksums to the kernel", on, len(s.shards))
			}
			ln := mustListen(t, s, ":7410")
			d := newNSDialer(t, lab.ClientNS, 1)
			served, conn, err := d.pair(ln, lab.ServerAddr.String()+":7410")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go func() {
				defer served.Close()
				served.SetDeadline(time.Now().Add(30 * time.Second))
				sendRecv(t, served, down)
			}()
			conn.SetDeadline(time.Now().Add(30 * time.Second))
			sum, n, err := sendRecv(t, conn, []byte("request"))
			if err != nil || n != size || !bytes.Equal(sum[:], want[:]) {
				t.Fatalf("kernel client received %d bytes (digest %x, %v); want %d (%x)", n, sum[:4], err, size, want[:4])
			}
		})
	}
}
