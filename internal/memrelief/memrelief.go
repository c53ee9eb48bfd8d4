// Package memrelief gives the daemon's memory back to the system after a
// burst (a SYN flood, a connection storm) has passed.
//
// Go's runtime keeps heap pages it freed for reuse and returns them only
// gradually, and an idle process collects garbage only every two minutes:
// after a flood the daemon's resident set stays near its peak for minutes
// although almost nothing is live. Relief looks at the heap at an interval
// and, when freed-but-kept pages pass a threshold, collects and returns
// them at once (debug.FreeOSMemory). Under steady load the freed pages stay
// small against the threshold and relief costs nothing; when it fires it
// costs one garbage collection of a heap that is mostly garbage.
//
// A burst's memory is not all garbage when the burst ends: what it left
// behind is freed over the next seconds (a SYN flood's half-open
// connections are aborted, its flows swept), and an idle process would
// not collect it for minutes. So a relief is followed by FollowUps more,
// one per quiet interval, whatever the heap's size; each is one garbage
// collection of a small heap.
package memrelief

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Defaults for Run.
const (
	DefaultInterval  = 5 * time.Second
	DefaultThreshold = 8 << 20 // bytes of freed heap the runtime may keep
	// FollowUps is how many reliefs follow one the heap's growth called
	// for: with DefaultInterval, 30 s of them.
	FollowUps = 6
)

// Heap is what relief decides on, in bytes.
type Heap struct {
	Objects  uint64 // live objects and dead ones not yet swept
	Free     uint64 // freed pages the runtime keeps (not returned)
	Released uint64 // pages returned to the system, still reserved
	Allocs   uint64 // allocated since the process started
}

var samples = []metrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/free:bytes"},
	{Name: "/memory/classes/heap/released:bytes"},
	{Name: "/gc/heap/allocs:bytes"},
}

// ReadHeap reads the runtime's heap figures.
func ReadHeap() Heap {
	s := make([]metrics.Sample, len(samples))
	copy(s, samples)
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return Heap{Objects: v(0), Free: v(1), Released: v(2), Allocs: v(3)}
}

// Reliever decides when to give memory back: once the daemon is quiet
// (it allocated less than Threshold since the last look) and its heap is
// more than Threshold above what it was after the last relief, or the
// runtime keeps more than Threshold of freed pages; such a relief is
// followed by FollowUps more, one per quiet look. Under load it never
// fires; the runtime's own collections and scavenger do their work then.
type Reliever struct {
	Threshold uint64
	base      uint64 // heap size (objects + free) after the last relief
	allocs    uint64 // Allocs at the last look
	started   bool
	followUps int // reliefs still due after the last one growth called for
}

// Due reports whether h calls for a relief.
func (r *Reliever) Due(h Heap) bool {
	size := h.Objects + h.Free
	if !r.started {
		r.started, r.base, r.allocs = true, size, h.Allocs
		return false
	}
	quiet := h.Allocs-r.allocs < r.Threshold
	r.allocs = h.Allocs
	switch {
	case !quiet:
		return false
	case h.Free > r.Threshold || size > r.base+r.Threshold:
		r.followUps = FollowUps
		return true
	case r.followUps > 0:
		r.followUps--
		return true
	}
	return false
}

// Relieved records the heap as a relief left it.
func (r *Reliever) Relieved(h Heap) { r.base, r.allocs = h.Objects+h.Free, h.Allocs }

// Run checks the heap every interval until ctx ends, and frees memory when
// due. A threshold or interval of 0 takes the default.
func Run(ctx context.Context, interval time.Duration, threshold uint64, log *slog.Logger) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if threshold == 0 {
		threshold = DefaultThreshold
	}
	r := Reliever{Threshold: threshold}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := ReadHeap()
		if !r.Due(before) {
			continue
		}
		debug.FreeOSMemory()
		after := ReadHeap()
		r.Relieved(after)
		log.Debug("returned freed memory to the system",
			"heap_before_mib", (before.Objects+before.Free)>>20, "heap_after_mib", (after.Objects+after.Free)>>20,
			"returned_mib", (after.Released-min(after.Released, before.Released))>>20)
	}
}
