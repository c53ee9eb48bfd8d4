// Package gostats reads a Go process's own garbage-collection counters:
// the CPU its collector took and the bytes it allocated (what the
// collector has to reclaim). fsstack's daemon and the lab's Go server
// report them with their shard counters, so that the lab can show what
// the collector costs per request beside the CPU figures.
package gostats

import "runtime/metrics"

// Runtime is a snapshot of the counters. The CPU figure is the runtime's
// own estimate (an overestimate, per runtime/metrics, and updated as
// collections end), good for comparing runs, not for adding to the
// kernel's CPU accounting.
type Runtime struct {
	GCCPUSeconds  float64 `json:"gc_cpu_seconds"`  // CPU spent collecting since the start
	AllocBytes    uint64  `json:"alloc_bytes"`     // bytes allocated on the heap since the start
	GCCycles      uint64  `json:"gc_cycles"`       // collections completed since the start
	HeapLiveBytes uint64  `json:"heap_live_bytes"` // heap marked live by the last collection
}

var names = []string{
	"/cpu/classes/gc/total:cpu-seconds",
	"/gc/heap/allocs:bytes",
	"/gc/cycles/total:gc-cycles",
	"/gc/heap/live:bytes",
}

// Read returns the counters now. A metric this Go release does not have
// reads as zero.
func Read() Runtime {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	u := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	var r Runtime
	if s[0].Value.Kind() == metrics.KindFloat64 {
		r.GCCPUSeconds = s[0].Value.Float64()
	}
	r.AllocBytes, r.GCCycles, r.HeapLiveBytes = u(1), u(2), u(3)
	return r
}
