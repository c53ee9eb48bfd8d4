package stack

import (
	"testing"
	"time"

	"github.com/fsstack/fsstack/capture"
)

// TestCaptureShards: on the real data path, a capture of one shard holds
// only that shard's frames, one of every shard holds frames of both
// directions, and a filtered one only what its filter accepts; a stack
// with no capture left publishes no taps.
func TestCaptureShards(t *testing.T) {
	lab := newLab(t)
	s := newLabStack(t, lab)
	serveText(t, mustListen(t, s, ":80"), "hello\n")
	serveText(t, mustListen(t, s, ":81"), "hello\n")
	all, err := s.Capture(CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	one, err := s.Capture(CaptureOptions{Shards: []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	flt, err := capture.ParseFilter("dst port 81")
	if err != nil {
		t.Fatal(err)
	}
	filtered, err := s.Capture(CaptureOptions{Match: flt.Match})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		if out, err := curl(lab); err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
	}
	if out, err := lab.Cmd(lab.ClientNS, "curl", "-sS", "--max-time", "10", "http://"+lab.ServerAddr.String()+":81/").CombinedOutput(); err != nil {
		t.Fatalf("curl :81: %v: %s", err, out)
	}
	time.Sleep(200 * time.Millisecond)
	// The every-shard capture closes last: it holds at least what the
	// others hold, even if a late frame arrives between the closes.
	for _, c := range []*Capture{one, filtered, all} {
		c.Close()
	}
	shards := map[int]int{}
	dirs := map[Direction]int{}
	for f := range all.Frames() {
		shards[f.Shard]++
		dirs[f.Dir]++
		if len(f.Data) != f.Len || f.Time.IsZero() {
			t.Errorf("frame of %d bytes, len %d, time %v", len(f.Data), f.Len, f.Time)
		}
	}
	if dirs[In] == 0 || dirs[Out] == 0 || all.Dropped() != 0 {
		t.Errorf("every-shard capture: %v by direction, %d dropped", dirs, all.Dropped())
	}
	t.Logf("every-shard capture: frames by shard %v", shards)
	n := 0
	for f := range one.Frames() {
		n++
		if f.Shard != 1 {
			t.Errorf("the capture of shard 1 holds a frame of shard %d", f.Shard)
		}
	}
	if n > shards[1] {
		t.Errorf("the capture of shard 1 holds %d frames, the every-shard capture %d of shard 1", n, shards[1])
	}
	m := 0
	for f := range filtered.Frames() {
		m++
		if f.Dir != In || !flt.Match(f.Data) {
			t.Errorf("the capture filtered to dst port 81 holds a frame going %v", f.Dir)
		}
	}
	if m == 0 {
		t.Error("the capture filtered to dst port 81 holds nothing")
	}
	for _, sh := range s.shards {
		if sh.ep.taps.Load() != nil {
			t.Errorf("shard %d still taps after every capture closed", sh.id)
		}
	}
}
