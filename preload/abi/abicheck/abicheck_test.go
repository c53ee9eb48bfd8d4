package abicheck

import (
	"math/rand/v2"
	"testing"

	"github.com/fsstack/fsstack/preload/abi"
)

func TestCheck(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatal(err)
	}
}

// TestPollMatchesC compares abi.Poll with the header's fss_sock_poll over
// random slot states.
func TestPollMatchesC(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		var s abi.Sock
		s.State = r.Uint32N(6)
		s.Events = abi.EvWord(s.State, r.Uint32()&0x3f)
		s.Accept_pending = r.Uint32N(3)
		s.Rx_tail = r.Uint32N(8)
		s.Rx_head = s.Rx_tail - r.Uint32N(3)
		s.Tx_head = r.Uint32()
		s.Tx_tail = s.Tx_head + r.Uint32N(4097)
		if g, c := abi.Poll(&s, 4096), CSockPoll(&s, 4096); g != c {
			t.Fatalf("state %+v: Go poll %#x, C poll %#x", s, g, c)
		}
	}
}
