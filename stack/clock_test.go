package stack

import (
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHeapClockOrder: timers fire once each, not before their deadline,
// whatever order they were armed in, and a timer moved earlier or later
// fires at its new deadline.
func TestHeapClockOrder(t *testing.T) {
	c := newHeapClock()
	const n = 200
	var wg sync.WaitGroup
	wg.Add(n)
	start := time.Now()
	var fired [n]atomic.Int32
	for _, i := range rand.Perm(n) {
		want := time.Duration(i%50) * time.Millisecond
		c.AfterFunc(want, func() {
			if el := time.Since(start); el < want {
				t.Errorf("timer %d fired after %v, before its %v", i, el, want)
			}
			fired[i].Add(1)
			wg.Done()
		})
	}
	wg.Wait()
	time.Sleep(20 * time.Millisecond)
	for i := range fired {
		if k := fired[i].Load(); k != 1 {
			t.Errorf("timer %d fired %d times", i, k)
		}
	}

	// Moved earlier: fires at the new deadline, not the old one.
	done := make(chan time.Time, 2)
	tm := c.AfterFunc(time.Hour, func() { done <- time.Now() })
	t0 := time.Now()
	tm.Reset(10 * time.Millisecond)
	select {
	case at := <-done:
		if at.Sub(t0) < 10*time.Millisecond {
			t.Errorf("moved-earlier timer fired after %v, before 10ms", at.Sub(t0))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a timer moved from 1h to 10ms did not fire within 5s")
	}
	// Moved later: does not fire at the old deadline.
	tm = c.AfterFunc(10*time.Millisecond, func() { done <- time.Now() })
	t0 = time.Now()
	tm.Reset(100 * time.Millisecond)
	at := <-done
	if at.Sub(t0) < 100*time.Millisecond {
		t.Errorf("moved-later timer fired after %v, before 100ms", at.Sub(t0))
	}
}

// TestHeapClockStop: Stop of a pending timer reports true and the call
// never happens; Stop after the call started, or twice, reports false; a
// stopped timer Reset fires again.
func TestHeapClockStop(t *testing.T) {
	c := newHeapClock()
	var calls atomic.Int32
	tm := c.AfterFunc(20*time.Millisecond, func() { calls.Add(1) })
	if !tm.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	if tm.Stop() {
		t.Error("a second Stop reported true")
	}
	time.Sleep(60 * time.Millisecond)
	if k := calls.Load(); k != 0 {
		t.Fatalf("stopped timer fired %d times", k)
	}
	ran := make(chan struct{})
	tm = c.AfterFunc(time.Millisecond, func() { close(ran) })
	<-ran
	if tm.Stop() {
		t.Error("Stop after the call ran reported true")
	}
	again := make(chan struct{}, 1)
	tm = c.AfterFunc(time.Hour, func() { again <- struct{}{} })
	tm.Stop()
	tm.Reset(time.Millisecond)
	select {
	case <-again:
	case <-time.After(5 * time.Second):
		t.Fatal("a stopped timer, Reset, did not fire")
	}
}

// TestHeapClockConcurrent: many goroutines arming, moving and stopping
// timers at once (go test -race): every timer not stopped fires exactly
// once.
func TestHeapClockConcurrent(t *testing.T) {
	c := newHeapClock()
	const workers, per = 8, 500
	var want, got atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(seed int64) {
			defer wg.Done()
			r := rand.New(rand.NewSource(seed))
			for i := 0; i < per; i++ {
				tm := c.AfterFunc(time.Duration(r.Intn(20))*time.Millisecond, func() { got.Add(1) })
				switch r.Intn(3) {
				case 0:
					if !tm.Stop() {
						want.Add(1) // it fired first
					}
				case 1:
					if !tm.Stop() {
						want.Add(1) // it fired first
					}
					tm.Reset(time.Duration(r.Intn(5)) * time.Millisecond)
					want.Add(1)
				default:
					want.Add(1)
				}
			}
		}(int64(w))
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < want.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if g, w := got.Load(), want.Load(); g != w {
		t.Fatalf("%d calls, want %d", g, w)
	}
}
