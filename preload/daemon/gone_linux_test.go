package daemon_test

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/shimtest"
)

// TestExitedListenerRefusesAtOnce: a process that held the last reference
// to a listener exits (its control connection closes), and a connect made
// right after — as by a parent that just reaped it (t_fork) — is refused,
// as on the kernel, where exit closes the listener before waitpid returns.
// The daemon used to release the listener only when the goroutine watching
// the control connection ran, which could be after it served the connect.
func TestExitedListenerRefusesAtOnce(t *testing.T) {
	e := start(t)
	b := e.attach(t)
	for i := range 100 {
		a, err := shimtest.Dial(e.path, shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck))
		if err != nil {
			t.Fatal(err)
		}
		_, ap := listen(t, a)
		a.Close()
		s, err := b.Socket()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Connect(s, ap); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("round %d: connect to the exited client's listener: %v, want ECONNREFUSED", i, err)
		}
		b.CloseSock(s)
	}
}
