//go:build linux

package afxdp

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package when a test leaves file descriptors open
// (sockets, maps, programs, links, namespaces).
func TestMain(m *testing.M) {
	// The runtime poller's fds live forever; create them first.
	if c, err := net.ListenPacket("udp4", "127.0.0.1:0"); err == nil {
		c.Close()
	}
	before := openFDs()
	goroutines := len(userGoroutines())
	code := m.Run()
	if fuzzSteering.s != nil {
		fuzzSteering.s.Close()
	}
	if code == 0 {
		var leaked []string
		for fd, target := range openFDs() {
			if _, ok := before[fd]; !ok {
				leaked = append(leaked, fd+" -> "+target)
			}
		}
		if len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "afxdp: file descriptors leaked: %v\n", leaked)
			code = 1
		}
	}
	if code == 0 {
		// Goroutines of finished tests may take a moment to exit.
		deadline := time.Now().Add(2 * time.Second)
		for len(userGoroutines()) > goroutines && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if g := userGoroutines(); len(g) > goroutines {
			fmt.Fprintf(os.Stderr, "afxdp: %d goroutines leaked:\n%s\n", len(g)-goroutines, strings.Join(g, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

func openFDs() map[string]string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		panic(err)
	}
	m := make(map[string]string, len(ents))
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			m[e.Name()] = target
		}
	}
	return m
}

// requireRoot fails (never skips): these tests exist to prove the kernel
// features work on the machines we target.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (BPF, AF_XDP, network namespaces); run the tests as root")
	}
}

// userGoroutines returns the stacks of all goroutines except the runtime's
// and the test framework's own (signal handling started by the fuzzer).
func userGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "os/signal.signal_recv") || strings.Contains(g, "afxdp.TestMain") {
			continue
		}
		out = append(out, g)
	}
	return out
}
