package conformance_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fsstack/fsstack/preload/daemon"
)

// startKernelDaemon serves shim clients in this process on the kernel's
// TCP stack, as preload/shimd does, on a unix socket in a temporary
// directory, and returns the socket's path. It stops with the test; if the
// test failed, the end of its log is shown.
func startKernelDaemon(t *testing.T) string {
	t.Helper()
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := daemon.New(daemon.Options{Backend: daemon.KernelBackend{}, Logger: log})
	if err != nil {
		t.Fatalf("daemon: %v", err)
	}
	path := filepath.Join(t.TempDir(), "fsstack.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		d.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-served
		if err := d.Close(); err != nil {
			t.Errorf("daemon: %v", err)
		}
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			t.Logf("the daemon's log, last %d lines:\n%s", min(len(lines), 40), strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return path
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
