package lab

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestSwitches: a thread that sleeps 100 times is switched in at least
// 100 times more, in its process's schedstat and in the machine's count.
func TestSwitches(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_, p0 := procSched("/proc/self")
	m0, err := machineSwitches()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		ts := unix.Timespec{Nsec: int64(200 * time.Microsecond)}
		unix.Nanosleep(&ts, nil)
	}
	_, p1 := procSched("/proc/self")
	m1, err := machineSwitches()
	if err != nil {
		t.Fatal(err)
	}
	if p1-p0 < 100 {
		t.Errorf("the process was switched in %d times over 100 sleeps", p1-p0)
	}
	if m1-m0 < 100 {
		t.Errorf("the machine counted %d context switches over 100 sleeps", m1-m0)
	}
}
