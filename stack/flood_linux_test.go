package stack

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsstack/fsstack/internal/netlab"
)

func heapInUse() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// floodRate is the SYNs per second TestSYNFlood sends: a flood several
// times what this 2-core machine's kernel serves as new connections, and
// what one core sends beside the stack without starving it outright.
const floodRate = 50_000

// TestSYNFlood floods a listener with spoofed SYNs for 5 s while four
// clients make requests, and checks that the legitimate requests are
// served and that the stack's memory stays bounded and comes back.
func TestSYNFlood(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	ln := mustListen(t, s, ":7500")
	go answerEach(ln, "ok")
	d := newNSDialer(t, lab.ClientNS, 4)
	addr := lab.ServerAddr.String() + ":7500"
	release, err := netlab.FloodLock() // one flood on the machine at a time
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	idle := heapInUse()

	// Four clients make requests one after another while the flood lasts;
	// each may take its time (SYN retransmissions), none may fail.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				var err error
				d.run(func() {
					var c net.Conn
					c, err = net.DialTimeout("tcp", addr, 10*time.Second) // four SYN retransmissions
					if err != nil {
						return
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					b := make([]byte, 2)
					if _, err = io.ReadFull(c, b); err == nil && string(b) != "ok" {
						err = fmt.Errorf("answer %q", b)
					}
				})
				if err == nil {
					ok.Add(1)
				} else {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	start := time.Now()
	sent, err := netlab.SYNFlood(lab.ClientNS, lab.ServerAddr, 7500, floodRate, 5*time.Second, 2_000_000)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	var peak runtime.MemStats
	runtime.ReadMemStats(&peak)
	// A machine loaded besides the test may let the clients finish fewer
	// than 20 requests during the flood (16 under six busy loops): they go
	// on until 20 are done, those right after the flood included.
	for deadline := time.Now().Add(30 * time.Second); ok.Load()+failed.Load() < 20 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	after := heapInUse()
	st := s.Stats()
	var rx, fillEmpty, ringFull, shed uint64
	for _, sh := range st {
		rx += sh.RxPackets
		fillEmpty += sh.XSKFillEmpty
		ringFull += sh.XSKRxRingFull
		shed += sh.SynShed
	}
	t.Logf("flood: %d SYNs in %v (%.0f/s); stack took %d frames, shed %d SYNs; kernel dropped %d for a full rx ring, %d for an empty fill ring",
		sent, el.Round(time.Millisecond), float64(sent)/el.Seconds(), rx, shed, ringFull, fillEmpty)
	t.Logf("legitimate requests: %d ok, %d failed (first error: %v)", ok.Load(), failed.Load(), firstErr.Load())
	t.Logf("heap in use: idle %d MiB, end of flood %d MiB, after %d MiB", idle>>20, peak.HeapInuse>>20, after>>20)
	if total := ok.Load() + failed.Load(); total < 20 || float64(ok.Load()) < 0.99*float64(total) {
		t.Errorf("only %d of %d legitimate requests were served during the flood (or just after it)", ok.Load(), total)
	}
	// A shard that falls behind sheds SYNs (stack/shed.go) before its
	// receive frames run out: the kernel drops nothing for an empty fill
	// ring, so no handshake's final ACK is lost with the flood's SYNs.
	if fillEmpty+ringFull > 0 {
		t.Errorf("the kernel dropped %d frames for an empty fill ring and %d for a full rx ring; want none (SYN shedding keeps frames for open connections)", fillEmpty, ringFull)
	}
	// What the flood may hold is bounded by configuration: each shard's
	// half-open endpoints (shardBacklog) and recorded flows
	// (maxClaimedFlows), not by how many SYNs the attacker sends.
	if limit := uint64(256 << 20); peak.HeapInuse > limit {
		t.Errorf("heap in use reached %d MiB during the flood; want at most %d MiB", peak.HeapInuse>>20, limit>>20)
	}
	if limit := idle + 128<<20; after > limit {
		t.Errorf("heap in use %d MiB after the flood (idle %d MiB); want at most %d MiB", after>>20, idle>>20, limit>>20)
	}
}
