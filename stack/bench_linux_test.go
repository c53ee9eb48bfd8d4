package stack

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// serveShort answers each connection with a 64-byte reply after reading a
// 5-byte request, then closes it (the server closes first, as an HTTP
// server with Connection: close does).
func serveShort(ln net.Listener) {
	reply := make([]byte, 64)
	serveEach(ln, func(c net.Conn) {
		var req [5]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		c.Write(reply)
	})
}

// runShort makes n connections with the given concurrency and returns
// connections per second.
func runShort(b *testing.B, d *nsDialer, addr string, n, workers int) float64 {
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		d.reqs <- func() {
			defer wg.Done()
			buf := make([]byte, 128)
			for next.Add(1) <= int64(n) {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("hello"))
				if _, err := io.ReadAtLeast(c, buf, 64); err != nil {
					failed.Add(1)
				}
				c.Close()
			}
		}
	}
	wg.Wait()
	el := time.Since(start)
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d connections to %s failed", f, n, addr)
	}
	return float64(n) / el.Seconds()
}

// BenchmarkShortConnections measures new connections per second on fsstack
// and on the kernel, same namespaces, same server code, same run, and
// reports the ratio.
func BenchmarkShortConnections(b *testing.B) {
	lab := newLab(b)
	s := newLabStack(b, lab)
	fl, err := s.Listen("tcp", ":80")
	if err != nil {
		b.Fatal(err)
	}
	go serveShort(fl)
	kl := listenIn(b, lab.ServerNS, lab.ServerAddr.String()+":8080")
	go serveShort(kl)
	const workers = 16
	d := newNSDialer(b, lab.ClientNS, workers)
	n := max(b.N, 2000)
	// Packets each way per connection, counted on the client's veth end:
	// the kernel's figure is what a connection needs, fsstack's excess is
	// per-packet work (a transmit, a peer's receive) it need not do.
	packets := func() (tx, rx uint64) {
		tx, rx, err := lab.ClientPackets()
		if err != nil {
			b.Fatal(err)
		}
		return tx, rx
	}
	b.ResetTimer()
	tx0, rx0 := packets()
	kernel := runShort(b, d, lab.ServerAddr.String()+":8080", n, workers)
	tx1, rx1 := packets()
	fs := runShort(b, d, lab.ServerAddr.String()+":80", n, workers)
	tx2, rx2 := packets()
	b.StopTimer()
	b.ReportMetric(fs, "fsstack-conn/s")
	b.ReportMetric(kernel, "kernel-conn/s")
	b.ReportMetric(fs/kernel, "ratio")
	b.ReportMetric(float64(tx1-tx0)/float64(n), "kernel-pkts-in/conn")
	b.ReportMetric(float64(rx1-rx0)/float64(n), "kernel-pkts-out/conn")
	b.ReportMetric(float64(tx2-tx1)/float64(n), "fsstack-pkts-in/conn")
	b.ReportMetric(float64(rx2-rx1)/float64(n), "fsstack-pkts-out/conn")
}

// bulkServe answers each connection by sending n bytes (dir "down") or by
// reading until the client's FIN (dir "up"), then closes it.
func bulkServe(ln net.Listener, n int) {
	buf := make([]byte, 256<<10)
	serveEach(ln, func(c net.Conn) {
		var dir [1]byte
		if _, err := io.ReadFull(c, dir[:]); err != nil {
			return
		}
		if dir[0] == 'd' {
			for left := n; left > 0; {
				k, err := c.Write(buf[:min(left, len(buf))])
				if err != nil {
					return
				}
				left -= k
			}
			return
		}
		io.Copy(io.Discard, c)
	})
}

// runBulk moves n bytes over one connection to addr in direction dir ('d':
// the server sends, 'u': the client sends) and returns Gbit/s.
func runBulk(b *testing.B, d *nsDialer, addr string, dir byte, n int) float64 {
	var el time.Duration
	var err error
	d.run(func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		start := time.Now()
		if _, err = c.Write([]byte{dir}); err != nil {
			return
		}
		var got int64
		if dir == 'd' {
			got, err = io.Copy(io.Discard, c)
		} else {
			buf := make([]byte, 256<<10)
			for left := n; left > 0 && err == nil; {
				var k int
				k, err = c.Write(buf[:min(left, len(buf))])
				left -= k
				got += int64(k)
			}
			if err == nil {
				c.(*net.TCPConn).CloseWrite()
				_, err = io.Copy(io.Discard, c) // the server's close
			}
		}
		el = time.Since(start)
		if err == nil && got != int64(n) {
			err = io.ErrUnexpectedEOF
		}
	})
	if err != nil {
		b.Fatalf("bulk %c to %s: %v", dir, addr, err)
	}
	return float64(n) * 8 / el.Seconds() / 1e9
}

// BenchmarkBulk measures one connection carrying 256 MiB each way, to and
// from a kernel peer, on fsstack (embedded API) and on the kernel, same
// namespaces, same run, and reports Gbit/s and the ratios.
func BenchmarkBulk(b *testing.B) {
	const n = 256 << 20
	lab := newLab(b)
	s := newLabStack(b, lab)
	fl, err := s.Listen("tcp", ":80")
	if err != nil {
		b.Fatal(err)
	}
	go bulkServe(fl, n)
	go bulkServe(listenIn(b, lab.ServerNS, lab.ServerAddr.String()+":8080"), n)
	d := newNSDialer(b, lab.ClientNS, 1)
	fsAddr, kAddr := lab.ServerAddr.String()+":80", lab.ServerAddr.String()+":8080"
	b.ResetTimer()
	for _, dir := range []byte{'d', 'u'} {
		name := map[byte]string{'d': "send", 'u': "receive"}[dir]
		kernel := runBulk(b, d, kAddr, dir, n)
		before := s.Stats()
		fs := runBulk(b, d, fsAddr, dir, n)
		if fs < kernel/4 {
			// A collapse: show what the shards saw, for whoever chases it.
			for i, st := range s.Stats() {
				b.Logf("%s at %.2f Gbit/s: shard %d before %+v", name, fs, i, before[i])
				b.Logf("%s at %.2f Gbit/s: shard %d after  %+v", name, fs, i, st)
				c := &s.shards[i].ctr
				b.Logf("%s: shard %d dropped: %d no neighbour, %d no frame or ring room, %d too big; %d held for an unresolved hop",
					name, i, c.txNoNeighbour.Load(), c.txNoFrame.Load(), c.txTooBig.Load(), c.txHeld.Load())
			}
		}
		b.ReportMetric(fs, "fsstack-"+name+"-Gbit/s")
		b.ReportMetric(kernel, "kernel-"+name+"-Gbit/s")
		b.ReportMetric(fs/kernel, "ratio-"+name)
	}
}
