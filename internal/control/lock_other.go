//go:build !linux

package control

import (
	"fmt"
	"os"
)

// lockFile only opens path: flock is Linux-only here, and the daemon runs
// only on Linux.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open control socket lock: %w", err)
	}
	return f, nil
}

// unlockFile closes the lock file; it stays (nothing locked it).
func unlockFile(f *os.File) error { return f.Close() }
