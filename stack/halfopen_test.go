package stack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

type fakeHalfOpen struct {
	state   tcp.EndpointState
	aborted bool
}

func (f *fakeHalfOpen) EndpointState() tcp.EndpointState { return f.state }
func (f *fakeHalfOpen) Abort()                           { f.aborted = true; f.state = tcp.StateError }

// TestHalfOpenPruner: nothing is looked at until a listener has sent a SYN
// cookie; then handshakes seen unfinished for halfOpenMaxAge are aborted,
// younger ones and completed ones are kept, and pruning stops once no
// half-open connection is left.
func TestHalfOpenPruner(t *testing.T) {
	var p halfOpenPruner
	var eps []*fakeHalfOpen
	listed := 0
	list := func() []halfOpen {
		listed++
		var hs []halfOpen
		for _, e := range eps {
			if e.state == tcp.StateSynRecv {
				hs = append(hs, e)
			}
		}
		return hs
	}
	sec := int64(time.Second)
	old := &fakeHalfOpen{state: tcp.StateSynRecv}
	eps = append(eps, old)
	if n := p.prune(0, 0, list); n != 0 || listed != 0 {
		t.Fatalf("no cookie sent: pruned %d, listed %d times; want nothing looked at", n, listed)
	}
	// A listener overflowed: old is seen, then pruned halfOpenMaxAge later.
	age := int64(halfOpenMaxAge)
	p.prune(1*sec, 5, list)
	young := &fakeHalfOpen{state: tcp.StateSynRecv}
	done := &fakeHalfOpen{state: tcp.StateSynRecv}
	eps = append(eps, young, done)
	p.prune(3*sec, 5, list)
	done.state = tcp.StateEstablished
	if n := p.prune(1*sec+age-1, 5, list); n != 0 || old.aborted {
		t.Fatalf("old pruned before its time")
	}
	if n := p.prune(1*sec+age, 5, list); n != 1 || !old.aborted || young.aborted || done.aborted {
		t.Fatalf("pruned %d (old %v, young %v, done %v); want only old", n, old.aborted, young.aborted, done.aborted)
	}
	// No more cookies, but young still lingers: still pruned in time.
	if n := p.prune(3*sec+age-1, 5, list); n != 0 || young.aborted {
		t.Fatalf("young pruned before its time")
	}
	if n := p.prune(3*sec+age, 5, list); n != 1 || !young.aborted {
		t.Fatalf("young not pruned halfOpenMaxAge after it was seen")
	}
	// None left: pruning stops and forgets its table.
	p.prune(4*sec+age, 5, list)
	if p.active || p.seen != nil {
		t.Fatal("pruner still active with no half-open connection")
	}
	listed = 0
	eps = append(eps, &fakeHalfOpen{state: tcp.StateSynRecv})
	p.prune(5*sec+age, 5, list)
	if listed != 0 {
		t.Fatal("pruner looked without a new cookie")
	}
	if p.pruned.Load() != 2 {
		t.Fatalf("pruned counter %d, want 2", p.pruned.Load())
	}
}
