package daemon_test

import (
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/shimtest"
)

// BenchmarkShortConnection is one short HTTP-like connection through the
// daemon on the kernel backend, the shim's side played by shimtest: a
// kernel client connects, sends 64 bytes, the "shim" accepts, reads them,
// answers 128 bytes and closes, the client reads to EOF. Besides ns/op and
// allocs/op it reports the process's CPU per connection (user + system,
// the kernel's TCP for both ends included), which the daemon's overheads
// move and a busy machine does not. Measures only; asserts nothing on
// time.
func BenchmarkShortConnection(b *testing.B) {
	e := start(b)
	c, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ls, err := c.Socket()
	if err != nil {
		b.Fatal(err)
	}
	ap, err := c.Listen(ls, loopback, 128)
	if err != nil {
		b.Fatal(err)
	}
	req, resp := make([]byte, 64), make([]byte, 128)
	buf := make([]byte, 4096)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		peer, err := net.Dial("tcp4", ap.String())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := peer.Write(req); err != nil {
			b.Fatal(err)
		}
		cs, _, err := c.Accept(ls)
		if err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(req); {
			n, err := c.Read(cs, buf)
			if err != nil || n == 0 {
				b.Fatalf("read: %d, %v", n, err)
			}
			got += n
		}
		if _, err := c.Write(cs, resp); err != nil {
			b.Fatal(err)
		}
		if err := c.CloseSock(cs); err != nil {
			b.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.ReadFull(peer, resp); err != nil {
			b.Fatalf("peer read %d: %v", n, err)
		}
		if _, err := peer.Read(buf); err != io.EOF {
			b.Fatalf("peer read after the answer: %v, want EOF", err)
		}
		peer.Close()
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime) - syscall.TimevalToNsec(ru0.Utime) +
		syscall.TimevalToNsec(ru1.Stime) - syscall.TimevalToNsec(ru0.Stime))
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/conn")
}
