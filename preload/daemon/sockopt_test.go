package daemon

import "testing"

func TestDeferAcceptRounding(t *testing.T) {
	// Values Linux reports back after setsockopt(TCP_DEFER_ACCEPT, in).
	for in, want := range map[int32]int32{0: 0, -3: 0, 1: 1, 2: 3, 3: 3, 5: 7, 7: 7, 8: 15, 30: 31} {
		if got := retransToSecs(secsToRetrans(in)); got != want {
			t.Errorf("TCP_DEFER_ACCEPT %d reads back %d, want %d", in, got, want)
		}
	}
}
