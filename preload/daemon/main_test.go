package daemon_test

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fsstack/fsstack/preload/daemon"
	"github.com/fsstack/fsstack/stack"
)

// The sharded stack is a backend as it is.
var _ daemon.Backend = (*stack.Stack)(nil)

// TestMain fails the package if the tests leak fds or goroutines: every
// client, socket, segment and eventfd must be released by Close.
func TestMain(m *testing.M) {
	fds, gs := countFDs(), runtime.NumGoroutine()
	code := m.Run()
	// The fuzzing engine keeps goroutines of its own.
	if fz := flag.Lookup("test.fuzz"); code == 0 && (fz == nil || fz.Value.String() == "") {
		var nf, ng int
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			nf, ng = countFDs(), runtime.NumGoroutine()
			if nf <= fds && ng <= gs {
				break
			}
		}
		if nf > fds {
			fmt.Fprintf(os.Stderr, "leaked fds: %d before the tests, %d after\n", fds, nf)
			code = 1
		}
		if ng > gs {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			fmt.Fprintf(os.Stderr, "leaked goroutines: %d before, %d after\n%s\n", gs, ng, filterStacks(string(buf[:n])))
			code = 1
		}
	}
	os.Exit(code)
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

func filterStacks(all string) string {
	var out []string
	for _, g := range strings.Split(all, "\n\n") {
		if strings.Contains(g, "preload/") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
