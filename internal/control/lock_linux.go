package control

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The lock file and its removal.
//
// A daemon holds flock(LOCK_EX) on PATH.lock for its life and removes the
// file when it stops cleanly, while it still holds the lock. Removing a
// lock file opens a race if nothing else is done: a second daemon may
// have opened the old file just before the removal and take the lock on
// it once the first lets go, while a third creates a new file at the path
// and locks that one; both would run. So lockFile, once it holds the
// lock, checks that the path still names the file it locked (same device
// and inode) and starts over if not: a lock on a removed file is worth
// nothing, and whoever holds the file at the path is the one daemon.

// lockAttempts bounds how often lockFile starts over because the file it
// locked was removed or replaced meanwhile (a daemon stopping each time).
const lockAttempts = 10

// lockFile opens path and takes a non-blocking exclusive flock on it.
// The lock lasts until the returned file is closed (or the process dies).
func lockFile(path string) (*os.File, error) {
	for range lockAttempts {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open control socket lock: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w: %s is locked by another daemon; stop it first or pass another --socket", ErrDaemonRunning, path)
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		same, err := sameFile(f, path)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if same {
			return f, nil
		}
		f.Close() // removed by a daemon that stopped: lock the new one
	}
	return nil, fmt.Errorf("lock %s: the lock file kept being replaced (%d attempts); is a daemon restarting in a loop?", path, lockAttempts)
}

// sameFile reports whether path names the file f has open.
func sameFile(f *os.File, path string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return false, err
	}
	if err := unix.Stat(path, &b); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// unlockFile removes the lock file, then releases the lock: in that order,
// so that a daemon which takes the lock on the removed file sees that the
// path no longer names it (lockFile) and does not run on it.
func unlockFile(f *os.File) error {
	var err error
	if same, serr := sameFile(f, f.Name()); serr == nil && same {
		if rerr := os.Remove(f.Name()); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("remove control socket lock: %w", rerr)
		}
	}
	f.Close()
	return err
}
