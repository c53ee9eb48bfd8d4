package lab

import (
	"testing"
	"time"
)

// TestMachineCPU: the machine's busy time grows by at least what this
// goroutine spins (USER_HZ ticks, so allow for the coarse clock).
func TestMachineCPU(t *testing.T) {
	before, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := machineCPU()
	if err != nil {
		t.Fatal(err)
	}
	if d := after - before; d < 200*time.Millisecond {
		t.Fatalf("machine busy time grew by %v over a 300 ms spin", d)
	}
}
