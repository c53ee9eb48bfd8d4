package stack

import "sync/atomic"

// shardCounters are written by the shard's goroutines with atomic adds and
// read by Stats at any time.
type shardCounters struct {
	rxPackets     atomic.Uint64
	rxMalformed   atomic.Uint64
	txPackets     atomic.Uint64
	txNoNeighbour atomic.Uint64
	txHeld        atomic.Uint64 // packets held for a next hop being resolved
	txNoFrame     atomic.Uint64
	txTooBig      atomic.Uint64
	txFrameWaits  atomic.Uint64 // writers that found no free tx frame and waited
	handoffsOut   atomic.Uint64
	handoffsIn    atomic.Uint64
	handoffsFull  atomic.Uint64 // segments dropped because the owner's ring was full
	wakeups       atomic.Uint64
	napFound      atomic.Uint64 // naps that ended on the timer and found frames nobody had woken the shard for
}
