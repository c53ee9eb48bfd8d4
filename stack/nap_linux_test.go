package stack

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// TestShardNapsFindFrames: a shard whose socket's readiness notification
// never comes (here: no watcher at all; under load the lab caught shards
// asleep 200 ms with frames on their rx ring) still finds its frames
// within its nap: right after work that is a millisecond, so a
// request/response exchange on a busy connection takes milliseconds, not
// the second an idle shard sleeps (nor the 200 ms of a retransmission
// probe that makes the client send again).
func TestShardNapsFindFrames(t *testing.T) {
	lab := newLab(t)
	s, err := New(Config{Interface: lab.ServerIf, Queues: labQueues, NetNS: lab.ServerNS, noRxWatch: true})
	if err != nil {
		t.Fatalf("stack.New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	go echoEach(mustListen(t, s, ":7700"))
	d := newNSDialer(t, lab.ClientNS, 1)
	var rtts []time.Duration
	var runErr error
	d.run(func() {
		c, err := net.DialTimeout("tcp", lab.ServerAddr.String()+":7700", 10*time.Second)
		if err != nil {
			runErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		buf := make([]byte, 5)
		for i := 0; i < 60; i++ {
			t0 := time.Now()
			if _, err := c.Write([]byte("hello")); err != nil {
				runErr = err
				return
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				runErr = err
				return
			}
			rtts = append(rtts, time.Since(t0))
		}
	})
	if runErr != nil {
		t.Fatal(runErr)
	}
	slices.Sort(rtts)
	median := rtts[len(rtts)/2]
	var missed uint64
	for _, st := range s.Stats() {
		missed += st.MissedWakeups
	}
	t.Logf("60 echoes without readiness notifications: median %v, max %v; %d frames found by naps", median, rtts[len(rtts)-1], missed)
	// A shard that slept until its housekeeping timer (sweepEvery) would
	// answer in about half a second on average; naps answer in about a
	// millisecond. 100 ms leaves room for a loaded machine.
	if median > 100*time.Millisecond {
		t.Errorf("median echo %v without notifications; want the shard's naps to find the frames within milliseconds", median)
	}
	if missed == 0 {
		t.Error("no missed wake-up counted, though no notification ever came")
	}
}
