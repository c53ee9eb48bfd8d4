package daemon_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fsstack/fsstack/internal/testutil"
	"github.com/fsstack/fsstack/preload/abi"
	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/preload/shimtest"
)

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
	testutil.AsUID(t, testutil.Nobody, func() {
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
		t.Fatalf("three attaches as uid %d: %v; want two attached, the third refused with EMFILE", testutil.Nobody, errs)
	}
	root := e.attach(t) // root is not capped
	echo(t, root)

	clients[0].Close()
	clients = clients[1:]
	waitFor(t, "the daemon to see the client go", func() bool { return e.d.Stats().Clients == 2 })
	testutil.AsUID(t, testutil.Nobody, func() {
		c, err := shimtest.Dial(e.path, hello)
		if err != nil {
			t.Errorf("attach as uid %d after one of its clients left: %v", testutil.Nobody, err)
			return
		}
		clients = append(clients, c)
	})
}
