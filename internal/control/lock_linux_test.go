package control

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLockFileRemovedSafely: a daemon removes its lock file when it stops.
// A second daemon that opened the file just before (and so can take the
// lock on the removed file) must not count that lock: lockFile checks
// that the path still names what it locked. A third that comes later
// locks a new file, and the second is refused by it.
func TestLockFileRemovedSafely(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock.lock")
	first, err := lockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The second daemon opened the lock file before the first removed it.
	stale, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	if err := unlockFile(first); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file after unlock: %v, want it removed", err)
	}
	// Its flock on the removed file succeeds, and is worth nothing.
	if err := unix.Flock(int(stale.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("flock of the removed file: %v", err)
	}
	if same, err := sameFile(stale, path); err != nil || same {
		t.Fatalf("sameFile of the removed lock file = %v, %v; want false", same, err)
	}
	// The third locks a new file at the path; the second, starting over
	// as lockFile does, is refused.
	third, err := lockFile(path)
	if err != nil {
		t.Fatalf("lock after the first daemon stopped: %v", err)
	}
	defer unlockFile(third)
	if same, err := sameFile(third, path); err != nil || !same {
		t.Fatalf("sameFile of the new lock file = %v, %v; want true", same, err)
	}
	if _, err := lockFile(path); !errors.Is(err, ErrDaemonRunning) {
		t.Fatalf("second lock while the third holds it: %v, want ErrDaemonRunning", err)
	}
}
