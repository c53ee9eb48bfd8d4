package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"
)

// bulkSize is what each direction carries in TestBulkBothWays: enough for
// the congestion window to open fully, GSO segments of 64 KiB to form on
// send and GRO to merge on receive.
const bulkSize = 48 << 20

// pattern is deterministic, not constant: a lost, repeated or reordered
// block changes the digest.
func pattern(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// sendRecv writes out on c while it reads everything the peer sends until
// its FIN, and returns the digest of what it read.
func sendRecv(t *testing.T, c net.Conn, out []byte) ([32]byte, int, error) {
	t.Helper()
	var wg sync.WaitGroup
	var werr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, werr = c.Write(out); werr == nil {
			werr = c.(interface{ CloseWrite() error }).CloseWrite()
		}
	}()
	h := sha256.New()
	n, rerr := io.Copy(h, c)
	wg.Wait()
	if werr != nil {
		return [32]byte{}, int(n), werr
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, int(n), rerr
}

// TestBulkBothWays moves bulkSize bytes each way at once between fsstack
// and a kernel peer, and between two fsstack sockets of the stack's own
// address (the looped path), and checks every byte by digest.
func TestBulkBothWays(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	up, down := pattern(bulkSize, 1), pattern(bulkSize, 2)
	wantUp, wantDown := sha256.Sum256(up), sha256.Sum256(down)

	ln := mustListen(t, s, ":7400")
	type result struct {
		sum [32]byte
		n   int
		err error
	}
	served := make(chan result, 2)
	go serveEach(ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(60 * time.Second))
		sum, n, err := sendRecv(t, c, down)
		served <- result{sum, n, err}
	})
	check := func(name string, sum [32]byte, n int, err error, want [32]byte) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: after %d bytes: %v", name, n, err)
		} else if n != bulkSize || !bytes.Equal(sum[:], want[:]) {
			t.Errorf("%s: got %d bytes, digest %x; want %d bytes, digest %x", name, n, sum[:4], bulkSize, want[:4])
		}
	}

	t.Run("kernel peer", func(t *testing.T) {
		d := newNSDialer(t, lab.ClientNS, 1)
		c, err := d.dial(lab.ServerAddr.String() + ":7400")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		sum, n, err := sendRecv(t, c, up)
		check("kernel client received", sum, n, err, wantDown)
		r := <-served
		check("fsstack server received", r.sum, r.n, r.err, wantUp)
	})
	t.Run("own address", func(t *testing.T) {
		c, err := s.DialContext(context.Background(), "tcp", lab.ServerAddr.String()+":7400")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		sum, n, err := sendRecv(t, c, up)
		check("fsstack client received", sum, n, err, wantDown)
		r := <-served
		check("fsstack server received", r.sum, r.n, r.err, wantUp)
	})
	// Frames the kernel kept longer than a writer waits (TxWaits, then
	// TxDropped) are retransmitted by TCP: a rate matter, like a NIC ring
	// that overflows, which the digests above show cost no byte. Shown for
	// whoever reads the log; BenchmarkBulk measures the rate.
	for _, sh := range s.Stats() {
		if sh.TxWaits+sh.TxDropped > 0 {
			t.Logf("shard %d: %d transmits waited for a free frame, %d frames dropped", sh.Shard, sh.TxWaits, sh.TxDropped)
		}
	}
}
