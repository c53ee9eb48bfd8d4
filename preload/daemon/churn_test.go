package daemon_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fsstack/fsstack/preload/abi"
)

// TestStateAndEventsAgree watches a slot from another goroutine while its
// connection is opened, accepted and closed, hundreds of times, and checks
// that every state read goes with the event flags of the same publish. The
// daemon once stored state and events as two words, and a shim that read
// them between the two stores saw CONNECTED without FSS_EV_CONNECTED, took
// the connect for refused and returned ECONNREFUSED (t_closeburst, one run
// in three). Read as two loads, this test sees such pairs within a few
// hundred connects; the events word now carries the state.
func TestStateAndEventsAgree(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	ls, ap := listen(t, c)

	var cur atomic.Pointer[abi.Sock] // the slot being connected
	var stop atomic.Bool
	var bad atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			sh := cur.Load()
			if sh == nil {
				runtime.Gosched()
				continue
			}
			st, ev := abi.StateEvents(sh)
			if msg := inconsistent(st, ev); msg != "" && bad.Load() == nil {
				bad.Store(msg)
			}
		}
	}()
	const n = 600
	for i := 0; i < n && bad.Load() == nil; i++ {
		s, err := c.Socket()
		if err != nil {
			t.Fatal(err)
		}
		cur.Store(c.Sock(s))
		if err := c.Connect(s, ap); err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		a, _, err := c.Accept(ls)
		if err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
		cur.Store(c.Sock(a))
		if err := c.CloseSock(s); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseSock(a); err != nil {
			t.Fatal(err)
		}
		cur.Store(nil)
	}
	stop.Store(true)
	wg.Wait()
	if msg := bad.Load(); msg != nil {
		t.Fatal(msg)
	}
}

// inconsistent says what is wrong with a state and event flags read
// together, or "".
func inconsistent(st, ev uint32) string {
	switch {
	case st == abi.StConnected && ev&abi.EvConnected == 0:
		return fmt.Sprintf("state CONNECTED with events %#x: no FSS_EV_CONNECTED", ev)
	case st == abi.StConnecting && ev&abi.EvConnected != 0:
		return fmt.Sprintf("state CONNECTING with events %#x", ev)
	case st == abi.StListening && ev&abi.EvListening == 0:
		return fmt.Sprintf("state LISTENING with events %#x", ev)
	case (st == abi.StOpen || st == abi.StFree) && ev&(abi.EvConnected|abi.EvListening) != 0:
		return fmt.Sprintf("state %d with events %#x", st, ev)
	}
	return ""
}
