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
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var req [5]byte
			if _, err := io.ReadFull(c, req[:]); err != nil {
				return
			}
			c.Write(reply)
		}()
	}
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
	b.ResetTimer()
	kernel := runShort(b, d, lab.ServerAddr.String()+":8080", n, workers)
	fs := runShort(b, d, lab.ServerAddr.String()+":80", n, workers)
	b.StopTimer()
	b.ReportMetric(fs, "fsstack-conn/s")
	b.ReportMetric(kernel, "kernel-conn/s")
	b.ReportMetric(fs/kernel, "ratio")
}
