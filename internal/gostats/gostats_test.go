package gostats

import (
	"runtime"
	"testing"
)

var sink []byte

// TestReadCounts checks that allocation and collection move the counters
// (every metric Read asks for exists in this Go release).
func TestReadCounts(t *testing.T) {
	before := Read()
	for range 1000 {
		sink = make([]byte, 4096)
	}
	runtime.GC()
	after := Read()
	if got := after.AllocBytes - before.AllocBytes; got < 1000*4096 {
		t.Errorf("allocated %d bytes by the counter; want at least %d", got, 1000*4096)
	}
	if after.GCCycles <= before.GCCycles {
		t.Errorf("GC cycles %d -> %d after runtime.GC", before.GCCycles, after.GCCycles)
	}
	if after.GCCPUSeconds <= before.GCCPUSeconds {
		t.Errorf("GC CPU %v -> %v s after a collection", before.GCCPUSeconds, after.GCCPUSeconds)
	}
	if after.HeapLiveBytes == 0 {
		t.Error("live heap reads 0")
	}
}
