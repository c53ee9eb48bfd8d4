package daemon_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/preload/shimtest"
)

// nobody is the unprivileged uid the tests attach or run a helper as.
const nobody = 65534

// asUID runs fn on a goroutine whose OS thread has effective uid uid, so
// that what fn connects carries uid in SO_PEERCRED. Only that thread
// changes (a raw setresuid), and it is never reused: the goroutine ends
// locked to it, and the runtime then retires the thread.
func asUID(t *testing.T, uid int, fn func()) {
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
		// Back to root before the thread is given back: a thread left as
		// uid would, were it the main thread (which Go never ends), make
		// /proc/PID/status, by which the daemon judges this process, say
		// uid for every later test.
		defer func() {
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
				t.Errorf("setresuid(-1, 0, -1): %v", e)
				return // the thread stays locked and ends with the goroutine
			}
			runtime.UnlockOSThread()
		}()
		fn()
	}()
	<-done
}

// openToAll lets every uid connect to the daemon's socket.
func openToAll(t *testing.T, path string) {
	t.Helper()
	for _, p := range []string{filepath.Dir(path), filepath.Dir(filepath.Dir(path))} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
}

// TestMaxClientsPerUID: a uid other than root attaches at most
// MaxClientsPerUID clients; the next is refused with EMFILE, root still
// attaches, and the uid attaches again once one of its clients is gone.
func TestMaxClientsPerUID(t *testing.T) {
	e := startOpts(t, daemon.Options{Backend: daemon.KernelBackend{}, MaxClientsPerUID: 2})
	openToAll(t, e.path)
	hello := shimtest.Hello(int32(os.Getpid()), abi.HelloWakeAck)
	var clients []*shimtest.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var errs []error
	asUID(t, nobody, func() {
		for range 3 {
			c, err := shimtest.Dial(e.path, hello)
			if err == nil {
				clients = append(clients, c)
			}
			errs = append(errs, err)
		}
	})
	var refused *shimtest.RefusedError
	if len(errs) != 3 || errs[0] != nil || errs[1] != nil || !errors.As(errs[2], &refused) || syscall.Errno(-refused.Status) != syscall.EMFILE {
		t.Fatalf("three attaches as uid %d: %v; want two attached, the third refused with EMFILE", nobody, errs)
	}
	root := e.attach(t) // root is not capped
	echo(t, root)

	clients[0].Close()
	clients = clients[1:]
	waitFor(t, "the daemon to see the client go", func() bool { return e.d.Stats().Clients == 2 })
	asUID(t, nobody, func() {
		c, err := shimtest.Dial(e.path, hello)
		if err != nil {
			t.Errorf("attach as uid %d after one of its clients left: %v", nobody, err)
			return
		}
		clients = append(clients, c)
	})
}
