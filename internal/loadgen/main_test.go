package loadgen

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package if a Run left a worker or progress goroutine
// behind.
func TestMain(m *testing.M) {
	code := m.Run()
	var leaked []string
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		leaked = leakedGoroutines()
		if len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if code == 0 && len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", strings.Join(leaked, "\n\n"))
		code = 1
	}
	os.Exit(code)
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/loadgen.") && !strings.Contains(g, "loadgen.TestMain") &&
			!strings.Contains(g, "loadgen.leakedGoroutines") {
			out = append(out, g)
		}
	}
	return out
}
