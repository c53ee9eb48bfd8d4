// Package testutil holds helpers that tests of several packages share.
package testutil

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// Nobody is the unprivileged uid tests act as.
const Nobody = 65534

// AsUID runs fn on a goroutine whose OS thread has effective uid uid, so
// that what fn connects or attaches carries uid in SO_PEERCRED. Only that
// thread changes (a raw setresuid; Go's own would change every thread),
// and it is set back to root before it is given back to the scheduler: a
// thread left as uid would, were it the main thread (which Go never ends),
// make /proc/PID/status, by which the daemon judges a process, say uid
// for every later test. If it cannot be set back, it stays locked and
// ends with the goroutine.
func AsUID(t testing.TB, uid int, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to act as another uid; run the tests as root")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			t.Errorf("setresuid(-1, %d, -1): %v", uid, e)
			return
		}
		defer func() {
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
				t.Errorf("setresuid(-1, 0, -1): %v", e)
				return
			}
			runtime.UnlockOSThread()
		}()
		fn()
	}()
	<-done
}
