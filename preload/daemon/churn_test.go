package daemon_test

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/shimtest"
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

// TestBacklogConnectsInOrder connects 6 times back to back to a listener
// with backlog 2, as conformance's t_connect does, and expects what the
// kernel gives one thread: 3 connections complete (and are queued), the
// other SYNs are dropped and retried only after a second. The daemon once
// dialed each CONNECT on its own goroutine; two handshakes in flight on two
// CPUs let a fourth client complete whose ACK the full queue then dropped
// (4 complete, 3 accepted). It now starts the connects on the client loop
// in request order.
func TestBacklogConnectsInOrder(t *testing.T) {
	e := start(t)
	c := e.attach(t)
	for round := range 30 {
		ls, err := c.Socket()
		if err != nil {
			t.Fatal(err)
		}
		ap, err := c.Listen(ls, loopback, 2)
		if err != nil {
			t.Fatal(err)
		}
		var cl [6]uint32
		var ids [6]uint64
		for i := range cl {
			if cl[i], err = c.Socket(); err != nil {
				t.Fatal(err)
			}
		}
		// Six non-blocking connects in one batch of the request ring, as
		// threads of one process may post them: served in ring order.
		for i := range cl {
			if ids[i], err = c.Post(abi.Req{Op: abi.OpConnect, Sock: cl[i], Data: shimtest.Addr(ap)}); err != nil {
				t.Fatal(err)
			}
		}
		for _, id := range ids {
			if cm, err := c.Result(id); err != nil || cm.Result != -int32(syscall.EINPROGRESS) {
				t.Fatalf("connect: %d, %v", cm.Result, err)
			}
		}
		time.Sleep(100 * time.Millisecond) // the dropped SYNs come back after 1 s
		done, accepted := 0, 0
		for _, s := range cl {
			if st, ev := abi.StateEvents(c.Sock(s)); st == abi.StConnected && ev&abi.EvConnected != 0 {
				done++
			}
		}
		for {
			cm, err := c.Call(abi.Req{Op: abi.OpAccept, Sock: ls})
			if errors.Is(err, syscall.EAGAIN) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			accepted++
			c.CloseSock(cm.Sock)
		}
		for _, s := range cl {
			c.CloseSock(s)
		}
		c.CloseSock(ls)
		if done != 3 || accepted != 3 {
			t.Fatalf("round %d: backlog 2, 6 connects: %d completed, %d accepted; the kernel completes and queues 3", round, done, accepted)
		}
	}
}
