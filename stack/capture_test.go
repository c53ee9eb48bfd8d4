package stack

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCaptureRecord: a capture keeps the frames its Match accepts, cut to
// SnapLen, counts the ones its full buffer could not take, and ends cleanly
// however Close races with the taps.
func TestCaptureRecord(t *testing.T) {
	s := &Stack{}
	c, err := s.Capture(CaptureOptions{
		Buffer:  2,
		SnapLen: 4,
		Match:   func(f []byte) bool { return f[0] != 'x' },
	})
	if err != nil {
		t.Fatal(err)
	}
	taps := &tapList{shard: 3, caps: []*Capture{c}}
	taps.tap(In, []byte("hello"))
	taps.tap(Out, []byte("xskip"))
	taps.tap(Out, []byte("abc"))
	taps.tap(In, []byte("dropped"))
	if c.Matched() != 3 || c.Dropped() != 1 {
		t.Fatalf("matched %d, dropped %d; want 3, 1", c.Matched(), c.Dropped())
	}
	f := <-c.Frames()
	if string(f.Data) != "hell" || f.Len != 5 || f.Dir != In || f.Shard != 3 || time.Since(f.Time) > time.Minute {
		t.Errorf("first frame %+v", f)
	}
	f = <-c.Frames()
	if string(f.Data) != "abc" || f.Len != 3 || f.Dir != Out || f.Dir.String() != "out" {
		t.Errorf("second frame %+v", f)
	}
	// Taps racing with Close neither panic nor add frames after it.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				taps.tap(In, []byte("race"))
			}
		}()
	}
	go func() {
		for range c.Frames() {
		}
	}()
	c.Close()
	wg.Wait()
	c.Close() // idempotent
	if len(s.captures) != 0 {
		t.Errorf("%d captures left on the stack after Close", len(s.captures))
	}
	if _, ok := <-c.Frames(); ok {
		t.Error("Frames still open after Close")
	}
}

func TestCaptureBadShard(t *testing.T) {
	s := &Stack{shards: make([]*shard, 2)}
	for _, id := range []int{-1, 2} {
		_, err := s.Capture(CaptureOptions{Shards: []int{id}})
		if !errors.Is(err, ErrNoShard) || !strings.Contains(err.Error(), "shards 0-1") {
			t.Errorf("shard %d: %v; want ErrNoShard naming 0-1", id, err)
		}
	}
	s.closed = true
	if _, err := s.Capture(CaptureOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

// TestCaptureHeldACK: the transmit tap sees what is posted: a pure ACK the
// link endpoint holds appears when it leaves, and one that a later
// segment carries never does.
func TestCaptureHeldACK(t *testing.T) {
	tx := newFakeTx(8)
	e := newLinkEndpoint(1500, "", false, tx, nil, &shardCounters{})
	e.acks.delay = time.Millisecond
	st := &Stack{}
	c, err := st.Capture(CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e.taps.Store(&tapList{shard: 0, caps: []*Capture{c}})

	// queue writes each frame into its tx frame (as WritePackets does),
	// runs it through queueFrameLocked and posts what is not held.
	queue := func(frames ...[]byte) {
		e.txMu.Lock()
		defer e.txMu.Unlock()
		e.tokens, e.lens = e.tokens[:0], e.lens[:0]
		for _, f := range frames {
			buf, tok, _ := tx.reserve()
			e.queueFrameLocked(buf[:copy(buf, f)], tok)
		}
		posted := tx.post(e.tokens, e.lens)
		if t := e.taps.Load(); t != nil {
			e.tapPostedLocked(t, posted)
		}
	}
	carried := flowAck(1, tcpFlagAck, 10, 0)
	answer := flowAck(1, tcpFlagAck|0x08, 10, 20)
	queue(carried, answer)
	held := flowAck(2, tcpFlagAck, 10, 0)
	queue(held)
	if got := len(c.Frames()); got != 1 {
		t.Fatalf("%d frames captured before the held ACK left, want 1 (the answer)", got)
	}
	if f := <-c.Frames(); !bytes.Equal(f.Data, answer) || f.Dir != Out {
		t.Fatalf("captured %x (%v), want the answer", f.Data, f.Dir)
	}
	e.releaseAcks(time.Now().Add(time.Hour).UnixNano(), true)
	select {
	case f := <-c.Frames():
		if !bytes.Equal(f.Data, held) {
			t.Fatalf("captured %x, want the held ACK", f.Data)
		}
	default:
		t.Fatal("the held ACK left but was not captured")
	}
	if len(c.Frames()) != 0 {
		t.Errorf("%d more frames captured: the carried ACK must not appear", len(c.Frames()))
	}
}
