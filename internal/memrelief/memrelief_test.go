package memrelief

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

const mib = 1 << 20

func TestRelieverDue(t *testing.T) {
	r := Reliever{Threshold: 8 * mib}
	steps := []struct {
		name string
		h    Heap
		due  bool
	}{
		{"first look sets the base", Heap{Objects: 10 * mib, Free: 2 * mib, Allocs: 100 * mib}, false},
		{"busy and grown: not yet", Heap{Objects: 60 * mib, Free: 20 * mib, Allocs: 400 * mib}, false},
		{"still busy", Heap{Objects: 70 * mib, Free: 30 * mib, Allocs: 900 * mib}, false},
		{"quiet, grown far above the base: due", Heap{Objects: 70 * mib, Free: 30 * mib, Allocs: 901 * mib}, true},
	}
	for _, s := range steps {
		if got := r.Due(s.h); got != s.due {
			t.Fatalf("%s: Due = %v, want %v", s.name, got, s.due)
		}
	}
	r.Relieved(Heap{Objects: 11 * mib, Free: 1 * mib, Allocs: 901 * mib})
	// Follow-ups: one per quiet look, near the base or not, not while busy.
	allocs := uint64(901 * mib)
	for i := 0; i < FollowUps; i++ {
		if i == 2 {
			allocs += 100 * mib
			if r.Due(Heap{Objects: 12 * mib, Free: 2 * mib, Allocs: allocs}) {
				t.Fatal("follow-up due while busy")
			}
		}
		allocs += mib
		if !r.Due(Heap{Objects: 12 * mib, Free: 2 * mib, Allocs: allocs}) {
			t.Fatalf("follow-up %d not due", i+1)
		}
		r.Relieved(Heap{Objects: 11 * mib, Free: 1 * mib, Allocs: allocs})
	}
	for _, s := range []struct {
		name string
		h    Heap
		due  bool
	}{
		{"quiet, near the new base, follow-ups done", Heap{Objects: 12 * mib, Free: 2 * mib, Allocs: allocs + mib}, false},
		{"quiet, many freed pages kept", Heap{Objects: 5 * mib, Free: 9 * mib, Allocs: allocs + 2*mib}, true},
	} {
		if got := r.Due(s.h); got != s.due {
			t.Fatalf("%s: Due = %v, want %v", s.name, got, s.due)
		}
	}
}

// TestRunReturnsMemory: garbage left by a burst is collected and its pages
// returned once the process is quiet, without waiting for the runtime's
// two-minute forced collection.
func TestRunReturnsMemory(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Run(ctx, 50*time.Millisecond, 8*mib, slog.New(slog.NewTextHandler(io.Discard, nil)))
	time.Sleep(150 * time.Millisecond) // Run's first look: the base
	var keep [][]byte
	for i := 0; i < 64; i++ {
		keep = append(keep, make([]byte, mib))
	}
	for i := range keep {
		keep[i][0] = 1
	}
	before := ReadHeap()
	keep = nil
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if h := ReadHeap(); h.Released >= before.Released+48*mib {
			return
		}
	}
	h := ReadHeap()
	t.Fatalf("64 MiB of garbage not returned: released %d MiB before, %d MiB after (objects %d MiB, free %d MiB)",
		before.Released>>20, h.Released>>20, h.Objects>>20, h.Free>>20)
}
