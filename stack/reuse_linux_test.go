package stack

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestClientPortReuse: a client that makes short connections from a small
// port range reuses each port while the server's end of its last use may
// still sit in TIME_WAIT, and each use may arrive on another queue (the
// client's kernel picks the transmit queue per socket). With the claim
// tables full (the state a busy short-connection server reaches after a
// few seconds; here a limit of 16 claims a shard), every connection must
// still be served: none reset, none lost. The lab's close phase reset a
// few hundred in a thousand once its clients started reusing their ports,
// and stalled: a SYN that found the table full left the old incarnation's
// claim in the directory, which handed the new connection's segments to
// the old one's shard.
func TestClientPortReuse(t *testing.T) {
	lab := newLab(t)
	s, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS, TimeWait: time.Second, claimLimit: 16})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if out, err := lab.Cmd(lab.ClientNS, "sysctl", "-w", "net.ipv4.ip_local_port_range=40000 40047").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v: %s", err, out)
	}
	ln := mustListen(t, s, ":7600")
	go answerEach(ln, "ok")
	addr := lab.ServerAddr.String() + ":7600"

	const workers, total = 4, 1500
	d := newNSDialer(t, lab.ClientNS, workers)
	var done, failed atomic.Int64
	var firstErr atomic.Value
	ports := make(map[int]int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done.Add(1) <= total {
				var err error
				var port int
				d.run(func() {
					var c net.Conn
					// A SYN the server's TIME_WAIT end drops is retransmitted
					// after a second; allow several.
					c, err = net.DialTimeout("tcp", addr, 10*time.Second)
					if err != nil {
						return
					}
					defer c.Close()
					port = c.LocalAddr().(*net.TCPAddr).Port
					c.SetDeadline(time.Now().Add(10 * time.Second))
					var b []byte
					// The server closes first: its end takes TIME_WAIT and
					// the port is free for the client's next connection.
					if b, err = io.ReadAll(c); err == nil && string(b) != "ok" {
						err = fmt.Errorf("answer %q", b)
					}
				})
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				mu.Lock()
				ports[port]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var resets, evicted, untracked, handoffs uint64
	for _, sh := range s.Stats() {
		resets += sh.Resets
		evicted += sh.FlowsEvicted
		untracked += sh.FlowsUntracked
		handoffs += sh.Handoffs
	}
	most := 0
	for _, n := range ports {
		most = max(most, n)
	}
	t.Logf("%d connections from %d ports (up to %d uses each); %d failed (first: %v); shards: %d resets, %d claims evicted, %d SYNs untracked, %d segments handed over",
		total, len(ports), most, failed.Load(), firstErr.Load(), resets, evicted, untracked, handoffs)
	if failed.Load() > 0 {
		t.Errorf("%d of %d connections failed, first: %v", failed.Load(), total, firstErr.Load())
	}
	if resets > 0 {
		t.Errorf("the shards sent %d resets; want none", resets)
	}
	if most < 10 {
		t.Errorf("ports used at most %d times each; the test wants them reused many times", most)
	}
	if evicted+untracked == 0 {
		t.Errorf("no claim evicted and no SYN untracked: the claim tables never filled")
	}
}
