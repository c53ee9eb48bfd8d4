package stack

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestShardCPUs: with Config.CPUs each shard's receive goroutine runs on
// its own thread pinned to its CPU (shard i on CPUs[i % len]), and a CPU
// the process may not use is refused with the allowed list.
func TestShardCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs")
	}
	lab := newLab(t)
	cpus := []int{1, 0}
	s, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS, CPUs: cpus})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i, sh := range s.shards {
		want := cpus[i%len(cpus)]
		var tid int32
		for deadline := time.Now().Add(5 * time.Second); tid == 0 && time.Now().Before(deadline); {
			if tid = sh.tid.Load(); tid == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if tid == 0 {
			t.Fatalf("shard %d did not pin itself", i)
		}
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(int(tid), &set); err != nil {
			t.Fatal(err)
		}
		if set.Count() != 1 || !set.IsSet(want) {
			t.Errorf("shard %d's thread %d runs on %s, want CPU %d", i, tid, cpuList(&set), want)
		}
		if got := s.Stats()[i].CPU; got != want {
			t.Errorf("shard %d's stats say CPU %d, want %d", i, got, want)
		}
	}
	// The stack still serves.
	ln := mustListen(t, s, ":7800")
	go answerEach(ln, "ok")
	d := newNSDialer(t, lab.ClientNS, 1)
	c, err := d.dial(lab.ServerAddr.String() + ":7800")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	if _, err := New(Config{Interface: lab.ServerIf, Queues: 1, NetNS: lab.ServerNS, CPUs: []int{4096}}); err == nil ||
		!strings.Contains(err.Error(), "CPU 4096 is not one this process may run on") {
		t.Errorf("CPU 4096: %v", err)
	}
	if err := (Config{Interface: "x", CPUs: []int{-1}}).Validate(); err == nil {
		t.Error("a negative CPU passed Validate")
	}
}
